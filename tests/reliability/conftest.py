"""The reliability suites (RELIABILITY.md): CI size by default, full size with RELIABILITY_FULL=1
(`make reliability`, `make soak`). Each test writes its figures to RELIABILITY_RESULTS (default
/tmp/clickstream-reliability) as JSON and prints them; the terminal summary lists the files."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from load.procs import Proc, start
from tests.reliability.support import FULL, RESULTS, Supervised

_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    written = sorted(p for p in RESULTS.glob("*") if p.is_file() and p.stat().st_mtime >= _STARTED)
    if written:
        terminalreporter.write_sep("-", f"reliability figures ({'full' if FULL else 'CI'} size)")
        for path in written:
            terminalreporter.write_line(str(path))


class Reaper:
    """Starts processes for a test and kills, at teardown, whatever still runs (a failed assertion
    must not leave collectors, flushers or a `serve` behind)."""

    def __init__(self) -> None:
        self.items: list[Proc | Supervised] = []

    def start(self, command: str, data_dir: Path, env: dict[str, str] | None = None) -> Proc:
        proc = start(command, data_dir, env, timeout=120)
        self.items.append(proc)
        return proc

    def track(self, supervised: Supervised) -> Supervised:
        self.items.append(supervised)
        return supervised

    def reap(self) -> None:
        for item in self.items:
            proc = item.proc if isinstance(item, Supervised) else item
            if proc is not None and proc.proc.poll() is None:
                if sys.platform == "linux":
                    os.kill(proc.proc.pid, signal.SIGCONT)  # a SIGSTOPped one too
                proc.proc.kill()
                proc.proc.wait()


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    reaper = Reaper()
    try:
        yield reaper
    finally:
        reaper.reap()
