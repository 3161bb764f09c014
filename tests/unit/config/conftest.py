"""Prints the Istio conformance counts at the end of a run that included the corpus tests."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ran = any(
        "test_istio_conformance" in r.nodeid
        for outcome, reports in terminalreporter.stats.items()
        if outcome != "deselected"  # the pure-Python run deselects them (tests/support/build.py)
        for r in reports
        if hasattr(r, "nodeid")
    )
    if ran:
        from tests.unit.config.test_istio_conformance import summary

        terminalreporter.write_line(summary())
