"""Tallies the conformance cases per category and prints the pass counts when the session ends."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

_TALLY = SimpleNamespace(passed=Counter(), total=Counter())


@pytest.fixture
def conformance_tally() -> SimpleNamespace:
    return _TALLY


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not _TALLY.total:
        return
    from conformance_suite import print_summary

    terminalreporter.section("XACML 3.0 conformance")
    print_summary(_TALLY.passed, _TALLY.total, terminalreporter.write_line)
