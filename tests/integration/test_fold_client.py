"""The fold runs on a ClickHouse client of its own (clickstream.runner.folders), so a fold statement
that takes seconds on a large history never holds up the flusher's inserts: a clickhouse-connect
client runs one call at a time (on chDB a lock per handle), and on the flusher's client each insert
waited out the fold's statement in front of it (BENCHMARKS.md "Freshness").

Real chDB in a temp directory, a real spool written by the collector, the real flusher.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import orjson

from clickstream.core.cluster import open_configured
from clickstream.core.settings import Settings
from clickstream.runner import folders
from collector.app import Collector
from flusher.loop import Flusher
from reports.fold import Folder
from tests.conftest import make_event, wait_for

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
#: A statement of ~6 s on the fold's client: 12 blocks of one row, 0.5 s each.
LONG_STATEMENT = "SELECT sleepEachRow(0.5) FROM numbers(12) SETTINGS max_block_size = 1, max_threads = 1"


def test_a_flush_completes_while_a_fold_statement_runs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    client = open_configured(settings)
    (folder,) = folders(settings)
    assert isinstance(folder, Folder)
    assert folder.client is not client
    # its statements run at the lowest CPU priority (clickstream.runner.FOLD_NICE), the flusher's at the default
    nice = "SELECT getSetting('os_thread_priority')"
    assert folder.client.query(nice).result_rows == [(19,)]
    assert client.query(nice).result_rows == [(0,)]
    collector = Collector(settings)
    collector.start()
    try:
        event = make_event()
        outcome = collector.accept(orjson.dumps(event), UA, "203.0.113.9")
        asyncio.run(collector.append(outcome))

        statement = threading.Thread(target=folder.client.query, args=(LONG_STATEMENT,))
        statement.start()
        wait_for(lambda: client.query("SELECT count() FROM system.processes WHERE query LIKE '%sleepEachRow(0.5)%' "
                                      "AND query NOT LIKE '%system.processes%'").result_rows[0][0] == 1,
                 timeout_s=30, what="the fold's statement to run")
        flushed = Flusher(settings, client, writer=collector.spool).flush_now()
        # the insert did not wait for the statement on the fold's client to finish
        still_running = statement.is_alive()
        statement.join()
        assert flushed == 1
        assert still_running
        assert client.query("SELECT toString(event_id) FROM events").result_rows == [(event["event_id"],)]
    finally:
        collector.stop()
        folder.stop()  # a last fold run, then its client is closed
        client.close()


def test_the_folders_client_is_closed_at_stop(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    client = open_configured(settings)
    try:
        (folder,) = folders(settings)
        assert isinstance(folder, Folder)
        folder.start()
        wait_for(lambda: folder.last is not None, timeout_s=60, what="the first fold run")
        folder.stop()
        assert client.query("SELECT count() FROM fold_runs").result_rows[0][0] >= 2  # the first run and the last
        try:
            folder.client.query("SELECT 1")
        except Exception as exc:  # clickhouse-connect refuses a call on a closed client
            assert "closed" in str(exc).lower(), exc
        else:
            raise AssertionError("the fold's client still answers after stop")
    finally:
        client.close()
