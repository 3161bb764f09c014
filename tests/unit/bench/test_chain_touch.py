"""bench/chain_touch.py's readings: a callgrind dump's self cost per (object, function) in distinct lines,
and a mapping's name in /proc/PID/smaps. bench/ is not a package: the script is loaded by path."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.bench.test_paced_cpu import load

pytestmark = pytest.mark.timeout(30)

# compressed names (defined once, then referred to by number), relative positions, a call's inclusive
# cost line after calls= (not the caller's own), trailing zero columns left out
DUMP = """# callgrind format
version: 1
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw

ob=(1) /usr/lib/libpython3.11.so.1.0
fl=(1) ceval.c
fn=(1) _PyEval_EvalFrameDefault
10 100 20 5 4 3 1 7 2 1
+2 50 10 0 1 0 0 3 1
cob=(2) /work/proxy/_native__mypyc.so
cfi=(2) native.c
cfn=(2) CPyDef_exchange___Exchange___begin
calls=1 40
+1 900 300 200 50 40 30 25 20 10
ob=(2)
fl=(2)
fn=(2)
40 300 60 40 9 8 7 6 5 4
fn=(1)
12 5
"""


def test_self_costs_counts_each_functions_own_lines(tmp_path: Path) -> None:
    touch = load("chain_touch")
    dump = tmp_path / "cg.out.1"
    dump.write_text(DUMP)
    costs = touch.self_costs(dump)
    # the eval loop's own two lines (the call's 25 + 30 lines belong to the callee); its 5 Ir under ob (2)
    assert costs[("libpython3.11.so.1.0", "_PyEval_EvalFrameDefault")] == [150, 10, 4]
    assert costs[("_native__mypyc.so", "CPyDef_exchange___Exchange___begin")] == [300, 6, 9]
    assert costs[("_native__mypyc.so", "_PyEval_EvalFrameDefault")] == [5, 0, 0]


def test_regions_name_file_text_and_data_and_the_kernels_tags() -> None:
    touch = load("chain_touch")
    assert touch.region("/usr/lib/libssl.so.3", "r-xp") == "libssl.so.3 text"
    assert touch.region("/usr/lib/libssl.so.3", "rw-p") == "libssl.so.3 data"
    assert touch.region("[heap]", "rw-p") == "[heap]"
    assert touch.region("", "rw-p").startswith("anon")
