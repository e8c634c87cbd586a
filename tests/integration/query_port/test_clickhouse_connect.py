"""clickhouse-connect's HTTP client (what Superset and Python scripts use) against the query port.

It probes the server on connect (version/timezone, system.settings, a Native `client_protocol_version`
probe) and then reads every result as Native: with the port honouring client_protocol_version=54405
like ClickHouse, every query here also exercises native_with_revision().
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import clickhouse_connect
import pyarrow as pa
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.integration.query_port.conftest import PASSWORD, USER, Port


def test_connect_negotiates_protocol_and_compression(ch: Any, port: Port) -> None:
    assert ch.server_version == port.qp.engine.version
    # The Native probe passed: BlockInfo framing is what the port sends (a server that ignores
    # client_protocol_version makes clickhouse-connect fall back to 0).
    assert ch.protocol_version == 54405
    # enable_http_compression is 1 in the engine's system.settings, so the client asks for gzip.
    assert ch.compression is not None


def test_query_rows_match_an_independent_count(ch: Any, events: list[dict[str, Any]]) -> None:
    result = ch.query("SELECT site_id, channel, count() AS n FROM events GROUP BY site_id, channel")
    got = {(r[0], r[1]): r[2] for r in result.result_rows}
    assert got == dict(Counter((e["site_id"], e["channel"]) for e in events))
    assert result.column_types[0].name == "LowCardinality(String)"
    assert result.summary["read_rows"] == str(len(events))
    assert result.query_id


def test_query_decodes_every_column_type_of_events(ch: Any, events: list[dict[str, Any]]) -> None:
    first = min(events, key=lambda e: (e["site_id"], e["ts"]))
    row = ch.query("SELECT * FROM events ORDER BY site_id, ts LIMIT 1").result_rows[0]
    (event_id, site_id, ts, session_id, path, channel, duration_ms, revenue, props, tags, referrer) = row
    assert event_id == uuid.UUID(first["event_id"])
    assert (site_id, session_id, path, channel, duration_ms) == (
        first["site_id"], first["session_id"], first["path"], first["channel"], first["duration_ms"])
    assert ts.replace(tzinfo=None) == dt.datetime.strptime(first["ts"], "%Y-%m-%d %H:%M:%S.%f")
    assert revenue == Decimal(first["revenue"])
    assert props == first["props"] and tags == first["tags"] and referrer == first["referrer"]


def test_more_types_through_the_native_transcoder(ch: Any) -> None:
    sql = """SELECT
        toLowCardinality(toNullable('lc')) AS lcn, [toLowCardinality('a'), toLowCardinality('b')] AS alc,
        map('k', [1, 2]) AS m, tuple(1, 'x', toDecimal32(1.5, 1)) AS t, CAST('b' AS Enum8('a' = 1, 'b' = 2)) AS e,
        toFixedString('ab', 3) AS fs, toIPv4('10.1.2.3') AS ip4, toIPv6('::1') AS ip6, [[1], [2, 3]] AS nested,
        CAST(NULL AS Nullable(Float64)) AS nf, toDate('2025-01-02') AS d, toInt128(-7) AS big, true AS b
    FROM numbers(3)"""
    rows = ch.query(sql).result_rows
    assert len(rows) == 3
    lcn, alc, m, t, e, fs, ip4, ip6, nested, nf, d, big, b = rows[0]
    assert (lcn, alc, m, e, fs, nested, nf, d, big, b) == (
        "lc", ["a", "b"], {"k": [1, 2]}, "b", b"ab\x00", [[1], [2, 3]], None, dt.date(2025, 1, 2), -7, True)
    assert t == (1, "x", Decimal("1.5"))
    assert str(ip4) == "10.1.2.3" and str(ip6) == "::1"


def test_query_df(ch: Any, events: list[dict[str, Any]]) -> None:
    df = ch.query_df("SELECT site_id, day, pageviews, sessions FROM v_daily ORDER BY site_id, day")
    assert list(df.columns) == ["site_id", "day", "pageviews", "sessions"]
    assert int(df["pageviews"].sum()) == len(events)
    expected_sessions: dict[tuple[str, str], set[str]] = {}
    for e in events:
        expected_sessions.setdefault((e["site_id"], e["ts"][:10]), set()).add(e["session_id"])
    got = {(r.site_id, str(r.day)[:10]): r.sessions for r in df.itertuples()}
    assert got == {k: len(v) for k, v in expected_sessions.items()}


def test_query_arrow(ch: Any, events: list[dict[str, Any]]) -> None:
    table = ch.query_arrow("SELECT channel, events, revenue FROM v_channels WHERE site_id = 'example.com'")
    assert isinstance(table, pa.Table)
    assert table.column_names == ["channel", "events", "revenue"]
    want = Counter(e["channel"] for e in events if e["site_id"] == "example.com")
    assert dict(zip(table.column("channel").to_pylist(), table.column("events").to_pylist(), strict=True)) == want


def test_server_side_parameter_binding(ch: Any, events: list[dict[str, Any]]) -> None:
    # {name:Type} placeholders with values sent as param_* URL parameters (server-side binding).
    result = ch.query(
        "SELECT count() FROM events WHERE site_id = {site:String} AND path IN {paths:Array(String)} "
        "AND ts >= {since:DateTime64(3)} AND duration_ms < {ms:UInt32}",
        parameters={"site": "example.com", "paths": ["/", "/pricing"],
                    "since": dt.datetime(2025, 3, 3, tzinfo=dt.UTC), "ms": 30_000})
    want = sum(1 for e in events if e["site_id"] == "example.com" and e["path"] in ("/", "/pricing")
               and e["ts"] >= "2025-03-03 00:00:00.000" and e["duration_ms"] < 30_000)
    assert result.result_rows == [(want,)]
    tricky = "tab\there 'quote' back\\slash € \\N"
    assert ch.query("SELECT {s:String}", parameters={"s": tricky}).result_rows == [(tricky,)]


def test_long_parameters_go_through_a_multipart_form(ch: Any, events: list[dict[str, Any]]) -> None:
    # Over 4096 bytes of parameters clickhouse-connect posts multipart/form-data (query + param_*).
    ids = [e["session_id"] for e in events[:400]] + [f"missing-{i}" for i in range(400)]
    got = ch.query("SELECT count() FROM events WHERE session_id IN {ids:Array(String)}", parameters={"ids": ids})
    assert got.result_rows == [(sum(1 for e in events if e["session_id"] in set(ids)),)]


def test_parameterized_view(ch: Any, events: list[dict[str, Any]]) -> None:
    rows = ch.query("SELECT path, hits FROM v_site_range(site = {s:String}, start = {a:DateTime64(3, 'UTC')}, "
                    "stop = {b:DateTime64(3, 'UTC')}) ORDER BY path",
                    parameters={"s": "shop.example.com", "a": "2025-03-02 00:00:00", "b": "2025-03-04 00:00:00"})
    want = Counter(e["path"] for e in events if e["site_id"] == "shop.example.com"
                   and "2025-03-02" <= e["ts"] < "2025-03-04")
    assert dict(rows.result_rows) == want


def test_command_and_metadata(ch: Any) -> None:
    tables = ch.command("SHOW TABLES")
    assert {"events", "v_daily", "v_channels", "v_site_range"} <= set(str(tables).split())
    assert ch.command("SELECT currentDatabase()") == "clickstream"
    assert ch.command("EXISTS TABLE events") == 1


def test_session_keeps_use_and_set(port: Port) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port.port, username=USER, password=PASSWORD,
                                           session_id="s-keep", database="clickstream")
    client.command("SET max_result_rows = 5")
    assert client.command("SELECT getSetting('max_result_rows')") == 5
    with pytest.raises(DatabaseError) as raised:
        client.query("SELECT number FROM system.numbers LIMIT 50")
    assert raised.value.code == 396  # TOO_MANY_ROWS_OR_BYTES: the session's lower cap applies
    client.command("USE system")
    assert client.command("SELECT currentDatabase()") in ("system", "clickstream")  # client re-sends database=
    client.close()


def test_write_is_refused_with_clickhouse_code(ch: Any, writer: Any) -> None:
    before = writer.command("SELECT count() FROM clickstream.events")
    with pytest.raises(DatabaseError) as raised:
        ch.command("INSERT INTO events (site_id) VALUES ('x')")
    assert raised.value.code == 164
    with pytest.raises(DatabaseError) as raised:
        ch.insert("events", [["x"]], column_names=["site_id"])
    assert raised.value.code == 164
    assert writer.command("SELECT count() FROM clickstream.events") == before


def test_wrong_password(port: Port) -> None:
    with pytest.raises(DatabaseError) as raised:
        clickhouse_connect.get_client(host="127.0.0.1", port=port.port, username=USER, password="nope")
    assert raised.value.code == 516
    assert "AUTHENTICATION_FAILED" in str(raised.value)
