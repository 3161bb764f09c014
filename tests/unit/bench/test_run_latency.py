"""bench/run.py's latency figures: which of h2load's per-request lines count, and the p99's interval.

bench/ is not a package (its scripts import run.py beside them), so run.py is loaded by path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.timeout(30)

RUN = Path(__file__).resolve().parents[3] / "bench" / "run.py"


@pytest.fixture(scope="module")
def run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", RUN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = mod  # dataclasses look the module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def test_the_first_seconds_of_a_segment_are_sent_but_not_counted(run: ModuleType, tmp_path: Path) -> None:
    # h2load --log-file: start (us since the epoch), status, latency (us); two connections' logs
    t0 = 1_800_000_000_000_000
    (tmp_path / "a.log").write_text(f"{t0}\t200\t37000\n{t0 + 400_000}\t200\t900\n{t0 + 500_000}\t200\t300\n")
    (tmp_path / "b.log").write_text(
        f"{t0 + 2_000}\t200\t21000\n{t0 + 700_000}\t503\t100\n{t0 + 900_000}\t200\t250\n"
    )
    rows = run.h2load_rows([tmp_path / "a.log", tmp_path / "b.log"])
    assert len(rows) == 5  # the 503 is left out
    assert sorted(run.after_warmup(rows, 0.5)) == [0.25, 0.3]  # from the first request's start + 0.5 s
    assert len(run.after_warmup(rows, 0.0)) == 5
    assert run.after_warmup([], 0.5) == []


def test_the_p99_interval_holds_the_p99_and_narrows_with_more_requests(run: ModuleType) -> None:
    few = [0.2] * 980 + [0.2 + i / 100 for i in range(20)]
    many = few * 10
    p99 = run.percentiles(few)[2]
    lo, hi = run.p99_interval(few)
    lo_many, hi_many = run.p99_interval(many)
    assert lo <= p99 <= hi
    assert hi_many - lo_many < hi - lo
