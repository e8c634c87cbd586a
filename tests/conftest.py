"""Shared fixtures: real processes on free ports, real data directories, event factories."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from load.procs import ROOT, free_port, start
from load.procs import Proc as Server
from reports.query import port_client, run_on_client

__all__ = ["ROOT", "SCHEMAS_DIR", "Server", "free_port", "make_event", "now_ms", "sql_rows", "start_server", "wait_for",
           "wait_for_fold"]

#: The repository's schemas/ folder (fixtures live there; the package reads it as clickstream.schemas).
SCHEMAS_DIR = ROOT / "schemas"

# No timing in a test's pass condition: Hypothesis' default 200 ms deadline per example is one
# (a first call that loads ua-parser's regexes or starts chDB is slow and fails it at random).
settings.register_profile("clickstream", deadline=None)
settings.load_profile("clickstream")


def now_ms() -> int:
    return int(time.time() * 1000)


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid page view stamped now; keyword arguments replace fields."""
    event: dict[str, Any] = {
        "type": "page_view",
        "site_id": "example.com",
        "anonymous_id": "anon-1",
        "session_id": "sess-1",
        "ts": now_ms(),
        "url": "https://example.com/pricing?utm_source=newsletter&utm_medium=email",
        "event_id": str(uuid.uuid4()),
    }
    event.update(overrides)
    return event


def sql_rows(server: Server, query: str) -> list[list[Any]]:
    """Rows of one read query through the server's query port (clickhouse-connect's HTTP client, the
    server's CLICKSTREAM_SQL_PASSWORD), as `clickstream sql` reads them (JSON values)."""
    client = port_client(server.sql_url, "dashboards", server.sql_password)
    try:
        rows: list[list[Any]] = run_on_client(client, query)["rows"]
    finally:
        client.close()
    return rows


def wait_for(condition: Callable[[], Any], timeout_s: float = 60, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy and return it; fail after `timeout_s` (a deadline for a
    test that would otherwise hang, not a pass condition)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_for_fold(server: Server, timeout_s: float = 60) -> None:
    """Wait through the query port for a fold run that started after now: every event already in
    `events` is then in the roll-ups the views read (reports/fold.py)."""
    ((now,),) = sql_rows(server, "SELECT toString(now64(6, 'UTC'))")
    wait_for(lambda: int(sql_rows(server, "SELECT count() FROM fold_runs WHERE watermark > "
                                          f"toDateTime64('{now}', 6, 'UTC')")[0][0]) > 0,
             timeout_s, "a fold run after the events")


def start_server(command: str, data_dir: Path, env: dict[str, str] | None = None, ready_path: str = "/healthz",
                 timeout: float = 60) -> Server:
    """Start `python -m clickstream.cli <command>` on a free port and wait until it answers."""
    return start(command, data_dir, env, ready_path=ready_path, timeout=timeout)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers on demand; every one still running is stopped (SIGTERM) at teardown."""
    started: list[Server] = []

    def factory(command: str = "collector", data_dir: Path | None = None, **env: str) -> Server:
        server = start_server(command, data_dir or tmp_path / "data",
                              {f"CLICKSTREAM_{k.upper()}": str(v) for k, v in env.items()})
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
