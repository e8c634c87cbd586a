"""One engine, two users: the flusher's clickhouse-connect chdb client (the writer) and the query port
in the same process. Also the chDB 26.9 behaviours the design rests on, as executable evidence."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import chdb
import clickhouse_connect
import httpx
import pytest

from tests.integration.query_port.conftest import PASSWORD, USER, Port
from tests.integration.query_port.test_http_protocol import post


def engine(path: Path, **settings: str) -> Any:
    query = "&".join(f"{k}={v}" for k, v in settings.items())
    return chdb.connect(f"{path}?{query}" if query else str(path))


def test_writes_are_visible_to_the_next_query(port: Port, writer: Any) -> None:
    before = int(post(port, "SELECT count() FROM ingest").text)
    writer.insert("clickstream.ingest", [[10_000 + i, "x"] for i in range(5)], column_names=["n", "payload"],
                  settings={"async_insert": 0})
    assert int(post(port, "SELECT count() FROM ingest").text) == before + 5


def test_port_settings_never_reach_the_writer(port: Port, writer: Any) -> None:
    for _ in range(3):
        post(port, "SELECT getSetting('readonly'), getSetting('max_threads')", params={"session_id": "iso"})
        post(port, "SET max_result_rows = 7", params={"session_id": "iso"})
    assert writer.command("SELECT getSetting('readonly')") == 0
    assert writer.command("SELECT getSetting('max_result_rows')") == 0
    writer.command("CREATE TABLE IF NOT EXISTS clickstream.scratch (a UInt8) ENGINE = Memory")
    writer.command("DROP TABLE clickstream.scratch")
    # and the port's view of settings is its own: readonly pinned to 1, caps applied
    r = post(port, "SELECT getSetting('readonly'), getSetting('max_threads'), getSetting('max_execution_time')")
    assert r.text == f"1\t{port.config.max_threads}\t{int(port.config.max_execution_time_s)}\n"


def test_writer_and_port_work_concurrently(port: Port, writer: Any) -> None:
    errors: list[str] = []
    stop = threading.Event()

    def read() -> None:
        with httpx.Client(auth=(USER, PASSWORD), timeout=30) as client:
            while not stop.is_set():
                r = client.post(port.url + "/", content="SELECT count(), uniqExact(session_id) FROM events")
                if r.status_code not in (200, 503):
                    errors.append(r.text)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    base = 100_000
    for batch in range(30):
        writer.insert("clickstream.ingest", [[base + batch * 10 + i, "y"] for i in range(10)],
                      column_names=["n", "payload"], settings={"async_insert": 0})
    stop.set()
    for thread in readers:
        thread.join()
    assert errors == []
    assert writer.command(f"SELECT count() FROM clickstream.ingest WHERE n >= {base}") == 300


def test_a_client_opened_after_the_port_shares_the_engine(port: Port, engine_dir: Path) -> None:
    late = clickhouse_connect.get_client(dsn=f"chdb://{engine_dir}")  # e.g. the stitcher's client
    try:
        assert late.command("SELECT count() FROM system.tables WHERE database = 'clickstream' AND name = 'events'") == 1
    finally:
        late.close()
    assert post(port, "SELECT 1").text == "1\n"


# ---- chDB 26.9 behaviour the design rests on ----------------------------------------------------


def test_chdb_connection_string_settings_are_per_connection(engine_dir: Path, writer: Any) -> None:
    ro = engine(engine_dir, readonly="1", max_threads="1", max_result_rows="5")
    try:
        assert ro.query("SELECT getSetting('readonly'), getSetting('max_result_rows')", "CSV").bytes() == b"1,5\n"
        assert writer.command("SELECT getSetting('readonly')") == 0
        plain = engine(engine_dir)
        assert plain.query("SELECT getSetting('readonly')", "CSV").bytes() == b"0\n"
        plain.close()
    finally:
        ro.close()


def test_chdb_session_coexists_with_the_clickhouse_connect_chdb_client(engine_dir: Path, writer: Any) -> None:
    """chdb.session.Session (a wrapper of the same connection the port uses) on the writer's path."""
    from chdb import session as chdb_session

    sess = chdb_session.Session(str(engine_dir))
    try:
        rows = writer.command("SELECT count() FROM clickstream.events")
        assert sess.query("SELECT count() FROM clickstream.events", "CSV").bytes() == f"{rows}\n".encode()
        before = writer.command("SELECT getSetting('max_result_rows')")
        sess.query("SET max_result_rows = 3")
        assert sess.query("SELECT getSetting('max_result_rows')", "CSV").bytes() == b"3\n"
        assert writer.command("SELECT getSetting('max_result_rows')") == before == 0
    finally:
        sess.close()
    writer.insert("clickstream.ingest", [[999_999, "after-session-close"]], column_names=["n", "payload"],
                  settings={"async_insert": 0})
    assert writer.command("SELECT count() FROM clickstream.ingest WHERE n = 999999") == 1


def test_chdb_one_engine_path_per_process(tmp_path: Path, writer: Any) -> None:
    with pytest.raises(RuntimeError, match="cannot connect with different path"):
        chdb.connect(str(tmp_path / "other"))


def test_chdb_readonly_2_lets_table_functions_read_and_write_files(engine_dir: Path, tmp_path: Path) -> None:
    """Why the port pins readonly=1: readonly=2 allows CREATE TEMPORARY TABLE, hence every table function."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t\n")
    out = tmp_path / "written.csv"
    conn = engine(engine_dir, readonly="2")
    try:
        assert conn.query(f"SELECT * FROM file('{secret}', 'LineAsString')", "CSV").bytes() == b'"s3cr3t"\n'
        conn.query(f"INSERT INTO FUNCTION file('{out}', 'CSV', 'a UInt8') VALUES (1)", "CSV")
        assert out.read_text() == "1\n"
    finally:
        conn.close()
    ro = engine(engine_dir, readonly="1")
    try:
        with pytest.raises(RuntimeError, match="READONLY"):
            ro.query(f"SELECT * FROM file('{secret}', 'LineAsString')", "CSV")
        # ... but readonly=1 does not cover the scalar file(), SYSTEM, KILL or INTO OUTFILE: the guard does
        assert ro.query(f"SELECT file('{secret}')", "CSV").bytes() == b'"s3cr3t\n"\n'
        ro.query("SYSTEM STOP MERGES", "CSV")  # all tables: would stall the writer's merges
        ro.query("SYSTEM START MERGES", "CSV")
        ro.query("KILL QUERY WHERE 0", "CSV")  # KILL QUERY WHERE 1 would kill the flusher's inserts
    finally:
        ro.close()


def test_chdb_ignores_client_protocol_version(engine_dir: Path) -> None:
    """Why native_with_revision exists: chDB writes Native as for revision 0 and has no such setting."""
    conn = engine(engine_dir, readonly="1")
    try:
        assert conn.query("SELECT 1 AS check", "Native").bytes() == b"\x01\x01\x05check\x05UInt8\x01"
        with pytest.raises(RuntimeError, match="UNKNOWN_SETTING"):
            conn.query("SELECT 1 SETTINGS client_protocol_version = 54405", "Native")
    finally:
        conn.close()


def test_chdb_runs_every_statement_of_a_multi_statement_text(engine_dir: Path) -> None:
    """Why the port proves one statement with formatQuery() before running anything."""
    conn = engine(engine_dir, readonly="1")
    try:
        assert conn.query("SELECT 1; SELECT 2", "CSV").bytes() == b"1\n2\n"
    finally:
        conn.close()


def test_chdb_connection_string_decodes_then_splits(engine_dir: Path) -> None:
    """Why setting values are restricted to a safe alphabet: '%26' becomes a parameter separator."""
    conn = engine(engine_dir, log_comment="a%26readonly%3D0")
    try:
        assert conn.query("SELECT getSetting('log_comment')", "CSV").bytes() != b'"a&readonly=0"\n'
    finally:
        conn.close()


def test_chdb_threads_run_queries_in_parallel(engine_dir: Path) -> None:
    """The GIL is released while chDB runs a query: the event loop and the writer keep going."""
    conn = engine(engine_dir, readonly="1", max_threads="1")
    ticks = 0
    done = threading.Event()

    def heavy() -> None:
        conn.query("SELECT count() FROM numbers(300000000) WHERE sipHash64(number) % 3 = 0", "CSV")
        done.set()

    thread = threading.Thread(target=heavy)
    thread.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    thread.join()
    conn.close()
    assert ticks > 10  # the main thread kept running during the query (with the GIL held it could not)
