"""Coverage-guided fuzzing of one target with atheris (libFuzzer): `make fuzz` runs each in turn.

    python -m tests.fuzz.atheris_main TARGET [libFuzzer flags, e.g. -max_total_time=60]

The corpus is tests/fuzz/corpus/TARGET (new interesting inputs are added there; config also starts
from tests/golden/config); a crash is written to tests/fuzz/crashes/TARGET/ and the run stops with it.
Crashes and corpus replay in the suite (tests/fuzz/test_fuzz_*.py ``test_kept_cases``).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["meshbus"]):
    from tests.fuzz import targets
    from tests.fuzz.seeds import CORPUS, CRASHES, GOLDEN


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in targets.TARGETS:
        sys.exit(
            f"usage: python -m tests.fuzz.atheris_main {{{'|'.join(targets.TARGETS)}}} [libFuzzer flags]"
        )
    name = argv[1]
    target = targets.TARGETS[name]
    corpus = CORPUS / name
    crashes = CRASHES / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    dirs = [str(corpus)] + ([str(GOLDEN)] if name == "config" else [])
    flags = [f"-artifact_prefix={crashes}/", "-timeout=10", "-rss_limit_mb=2048", *argv[2:]]
    atheris.Setup([argv[0], *flags, *dirs], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
