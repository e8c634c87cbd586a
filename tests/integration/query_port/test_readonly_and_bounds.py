"""Read only and bounded: every write, file/URL/code-running table function, setting escalation and
cap is refused with ClickHouse's error shape and code, and nothing happens on disk or in the data."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.query_port.conftest import HEAVY, PASSWORD, USER, Port, held_slot
from tests.integration.query_port.test_http_protocol import ERROR_BODY, post

WRITES = [
    "INSERT INTO events (site_id) VALUES ('x')",
    "INSERT INTO events SELECT * FROM events",
    "CREATE TABLE t2 (a UInt8) ENGINE = Memory",
    "CREATE TEMPORARY TABLE tmp (a UInt8)",
    "CREATE VIEW v2 AS SELECT 1",
    "CREATE DATABASE d2",
    "CREATE FUNCTION f2 AS x -> x",
    "DROP TABLE events",
    "DROP DATABASE clickstream",
    "TRUNCATE TABLE events",
    "ALTER TABLE events DELETE WHERE 1",
    "ALTER TABLE events ADD COLUMN z UInt8",
    "DELETE FROM events WHERE 1",
    "RENAME TABLE events TO events2",
    "OPTIMIZE TABLE events FINAL",
    "DETACH TABLE events",
    "ATTACH TABLE events",
    "SYSTEM STOP MERGES",  # allowed by chDB even under readonly=1: the statement guard refuses it
    "SYSTEM FLUSH LOGS",
    "SYSTEM SHUTDOWN",
    "KILL QUERY WHERE 1",  # allowed by chDB under readonly: would kill the flusher's inserts
    "GRANT SELECT ON *.* TO default",
    "CREATE USER u2",
    "BACKUP TABLE events TO Disk('default', 'b.zip')",
    "UNDROP TABLE events",
    "EXCHANGE TABLES events AND ingest",
]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused(port: Port, writer: Any, sql: str) -> None:
    before = writer.command("SELECT count() FROM clickstream.events")
    r = post(port, sql)
    assert r.status_code == 500, r.text
    assert r.headers["x-clickhouse-exception-code"] == "164"
    assert ERROR_BODY.match(r.text) and "(READONLY)" in r.text
    assert writer.command("SELECT count() FROM clickstream.events") == before
    assert writer.command("SELECT count() FROM system.tables WHERE database = 'clickstream' AND name = 'events'") == 1


def test_writes_are_refused_on_get_too(port: Port) -> None:
    r = httpx.get(port.url + "/", params={"query": "DROP TABLE events"}, auth=(USER, PASSWORD))
    assert r.headers["x-clickhouse-exception-code"] == "164"


TABLE_FUNCTIONS = [
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", 497),
    ("SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')", 497),
    ("SELECT * FROM s3('http://127.0.0.1:9/b/x.csv', 'CSV')", 497),
    ("SELECT * FROM executable('cat /etc/passwd', 'LineAsString', 'x String')", 497),
    ("SELECT * FROM remote('127.0.0.1', system.one)", 497),
    ("SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p')", 497),
    ("SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')", 497),
    ("SELECT * FROM sqlite('/tmp/x.db', 't')", 497),
    ("SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'CSV', 'a UInt8')", 497),
    ("SELECT * FROM python(x)", 497),
    ("SELECT * FROM format(CSV, 'a UInt8', '1')", 497),
    # eval() is allow_readonly in ClickHouse but runs a SELECT built from a string: here file()
    ("SELECT * FROM eval(concat('SELECT fi', 'le(''/etc/passwd'')'))", 497),
    ("SELECT file('/etc/passwd')", 497),  # the scalar file() reads any path on chDB, readonly or not
    ("SELECT FILE('/etc/passwd')", 497),
    ("WITH (SELECT file('/etc/hostname')) AS x SELECT x", 497),
    ("SELECT * FROM view(SELECT file('/etc/passwd'))", 497),
    ("SELECT * FROM numbers(1) WHERE number IN (SELECT length(file('/etc/passwd')))", 497),
    ("EXPLAIN SELECT * FROM file('/etc/passwd', 'LineAsString')", 497),
    ("SELECT * FROM numbers(2) JOIN url('http://127.0.0.1:9/', 'CSV', 'number UInt64') USING number", 497),
    ("INSERT INTO FUNCTION file('/tmp/qport-should-not-exist.csv', 'CSV', 'a UInt8') VALUES (1)", 164),
    ("SELECT 1 INTO OUTFILE '/tmp/qport-should-not-exist.csv'", 358),
    ("SELECT 1 INTO OUTFILE '/tmp/qport-should-not-exist.csv' FORMAT CSV", 358),
]


@pytest.mark.parametrize("sql,code", TABLE_FUNCTIONS)
def test_files_urls_and_code_are_refused(port: Port, sql: str, code: int) -> None:
    r = post(port, sql)
    assert r.headers["x-clickhouse-exception-code"] == str(code), r.text
    assert r.status_code == {497: 403, 164: 500, 358: 500}[code]
    assert ERROR_BODY.match(r.text)
    assert "root:" not in r.text
    assert not Path("/tmp/qport-should-not-exist.csv").exists()


def test_the_guard_verdict_is_kept_per_text_never_per_value(port: Port) -> None:
    """The port keeps the guard's verdict on a read statement by its text (reports/query_port/engine.py):
    a refused text is refused every time, a passed text runs with any parameter value, a text one
    character away is checked anew, and a text with an Identifier parameter is checked every time."""
    for _ in range(3):
        refused = post(port, "SELECT length(file('/etc/passwd'))")
        assert refused.headers["x-clickhouse-exception-code"] == "497" and "root:" not in refused.text
    text = "SELECT {n:UInt8} + 1 AS x FORMAT TSV"
    for n, want in (("1", "2\n"), ("41", "42\n"), ("1", "2\n")):
        answer = post(port, text, params={"param_n": n})
        assert answer.status_code == 200 and answer.text == want, answer.text
    assert post(port, text.replace("+ 1", "+ length(file('/etc/passwd'))"), params={"param_n": "1"}).headers[
        "x-clickhouse-exception-code"] == "497"
    by_name = "SELECT count() > 0 FROM {t:Identifier} FORMAT TSV"
    assert post(port, by_name, params={"param_t": "events"}).text == "1\n"
    assert post(port, by_name, params={"param_t": "no_such_table"}).headers["x-clickhouse-exception-code"] == "60"


def test_allowed_table_functions_and_parameterized_views(port: Port) -> None:
    for sql in ("SELECT count() FROM numbers(10)", "SELECT count() FROM values('a UInt8', 1, 2)",
                "SELECT count() FROM view(SELECT 1)", "SELECT count() FROM merge('clickstream', '^ingest$')",
                "SELECT * FROM generateRandom('a UInt8') LIMIT 1",
                "SELECT count() FROM v_site_range(site = 'x', start = '2025-01-01', stop = '2025-01-02')",
                "SELECT count() FROM clickstream.v_site_range(site = 'x', start = '2025-01-01', stop = '2025-01-02')"):
        r = post(port, sql)
        assert r.status_code == 200, (sql, r.text)


@pytest.mark.parametrize("sql,params,code,status", [
    ("SET readonly = 0", {}, 164, 500),
    ("SET readonly = 1", {}, 200, 200),  # not laxer than the port: accepted, changes nothing
    ("SELECT 1 SETTINGS readonly = 0", {}, 164, 500),
    ("SELECT 1", {"readonly": "0"}, 164, 500),
    ("SELECT 1", {"max_execution_time": "1000"}, 452, 500),
    ("SELECT 1", {"max_execution_time": "0"}, 452, 500),  # 0 means unlimited
    ("SELECT 1", {"max_memory_usage": "0"}, 452, 500),
    ("SELECT 1", {"max_threads": "8"}, 452, 500),
    ("SELECT 1", {"result_overflow_mode": "break"}, 452, 500),
    ("SET max_result_rows = 0", {}, 452, 500),
    ("SELECT 1 SETTINGS max_threads = 8", {}, 164, 500),  # SQL SETTINGS cannot change anything but
    ("SELECT 1 SETTINGS max_execution_time = 1000", {}, 164, 500),  # what readonly=1 allows
    ("SELECT 1", {"allow_introspection_functions": "1"}, 164, 500),
    ("SELECT 1", {"no_such_setting": "1"}, 115, 404),
    ("SELECT 1", {"log_comment": "a&b=c"}, 36, 400),
    ("SELECT 1", {"default_format": "NoSuchFormat"}, 73, 404),
    ("SELECT 1 FORMAT NoSuchFormat", {}, 73, 404),
    ("SELECT 1; SELECT 2", {}, 62, 400),
    ("SELECT 1; DROP TABLE events", {}, 62, 400),
    ("SELEC 1", {}, 62, 400),
    ("", {}, 62, 400),
    ("SELECT * FROM no_such_table", {}, 60, 404),
    ("SELECT no_such_function(1)", {}, 46, 404),
    ("SELECT 1", {"database": "no_such_db"}, 81, 404),
])
def test_settings_and_query_errors(port: Port, sql: str, params: dict[str, str], code: int, status: int) -> None:
    r = post(port, sql, params=params)
    assert r.status_code == status, r.text
    if code != 200:
        assert r.headers["x-clickhouse-exception-code"] == str(code), r.text
        assert ERROR_BODY.match(r.text), r.text


def test_query_size_limit(port: Port) -> None:
    r = post(port, "SELECT 1 -- " + "x" * (port.config.max_query_size_bytes + 1))
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (400, "62")
    assert "Max query size exceeded" in r.text


def test_max_result_rows_and_memory(port: Port, start_port: Any) -> None:
    r = post(port, f"SELECT number FROM numbers({port.config.max_result_rows + 1})")
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (500, "396")
    small = start_port(max_memory_usage_bytes=50 << 20)
    r = post(small, "SELECT groupArray(number) FROM numbers(100000000)")
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (500, "241")


def test_over_long_query_hits_max_execution_time(start_port: Any) -> None:
    quick = start_port(max_execution_time_s=1.0)
    r = post(quick, HEAVY)
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (408, "159")
    assert "(TIMEOUT_EXCEEDED)" in r.text


def hold(port: Port, params: str = "") -> Any:
    return held_slot("127.0.0.1", port.port, PASSWORD, lambda: port.qp.stats()["running"], params)


def test_too_many_concurrent_queries_get_503_with_retry_after(start_port: Any) -> None:
    one = start_port(max_concurrent_queries=1)
    with hold(one):
        r = post(one, "SELECT 1")
    assert r.status_code == 503
    assert r.headers["retry-after"] == str(one.config.retry_after_s)
    assert r.headers["x-clickhouse-exception-code"] == "202"
    assert ERROR_BODY.match(r.text) and "(TOO_MANY_SIMULTANEOUS_QUERIES)" in r.text
    assert one.qp.stats()["rejected_busy"] == 1
    assert one.qp.stats()["cancelled"] == 1  # the holder went away: its query was killed, not left to run 25 s
    assert post(one, "SELECT 1").text == "1\n"  # the slot is free again


def test_a_session_runs_one_query_at_a_time(port: Port) -> None:
    with hold(port, "session_id=busy"):
        r = post(port, "SELECT 1", params={"session_id": "busy"})
        other = post(port, "SELECT 1", params={"session_id": "free"})
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (500, "373")
    assert other.text == "1\n"
    assert post(port, "SELECT 1", params={"session_id": "busy"}).text == "1\n"  # unlocked when its query ended


def test_query_id_must_be_unique_among_running_queries(port: Port) -> None:
    with hold(port, "query_id=dup"):
        r = post(port, "SELECT 1", params={"query_id": "dup"})
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (500, "216")
    assert post(port, "SELECT 1", params={"query_id": "dup"}).text == "1\n"


def test_queued_query_waits_for_a_slot_with_queue_max_wait_ms(start_port: Any) -> None:
    queued = start_port(max_concurrent_queries=1, queue_max_wait_ms=120_000)
    answers: list[httpx.Response] = []
    with hold(queued):
        waiting = threading.Thread(target=lambda: answers.append(post(queued, "SELECT 2")))
        waiting.start()
    waiting.join()
    assert (answers[0].status_code, answers[0].text) == (200, "2\n")  # waited instead of 503
    assert queued.qp.stats()["rejected_busy"] == 0


def test_multipart_external_tables_are_refused(port: Port) -> None:
    r = httpx.post(port.url + "/", params={"query": "SELECT * FROM ext", "ext_structure": "a UInt8"},
                   files={"ext": ("ext.tsv", b"1\n")}, auth=(USER, PASSWORD))
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (501, "48")
