"""The reliability suites (RELIABILITY.md): CI size by default, full size with RELIABILITY_FULL=1
(`make reliability`, `make soak`). Each test writes its figures to RELIABILITY_RESULTS (default
/tmp/clickstream-reliability) as JSON and prints them; the terminal summary lists the files."""

from __future__ import annotations

import time

import pytest

from tests.reliability.support import FULL, RESULTS

_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    written = sorted(p for p in RESULTS.glob("*") if p.is_file() and p.stat().st_mtime >= _STARTED)
    if written:
        terminalreporter.write_sep("-", f"reliability figures ({'full' if FULL else 'CI'} size)")
        for path in written:
            terminalreporter.write_line(str(path))
