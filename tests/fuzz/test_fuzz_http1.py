"""The HTTP/1.1 codec never crashes on any input: only its typed refusal (400/431 downstream, 502
upstream). Kept cases (corpus, crashes) replay first; then hypothesis mutates them."""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.fuzz import targets
from tests.fuzz.mutate import mutated
from tests.fuzz.seeds import SUITE_SAMPLE, corpus

REQUESTS, RESPONSES = corpus("http1_request"), corpus("http1_response")


@pytest.mark.parametrize("target", ["http1_request", "http1_response"])
def test_kept_cases(target: str) -> None:
    cases = corpus(target, sample=SUITE_SAMPLE)
    assert cases, f"no corpus for {target}: python -m tests.fuzz.seeds"
    for case in cases:
        targets.TARGETS[target](case)


@given(mutated(REQUESTS))
def test_request_heads_and_bodies(data: bytes) -> None:
    targets.http1_request(data)


@given(mutated(RESPONSES))
def test_response_heads_and_bodies(data: bytes) -> None:
    targets.http1_response(data)
