"""The ClickHouse HTTP interface, request by request, with a plain HTTP client (httpx): what curl,
Redash and hand-written integrations rely on (docs: clickhouse.com/docs/interfaces/http)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.integration.query_port.conftest import PASSWORD, USER, Port
from tests.integration.query_port.native_reader import NativeReader

AUTH = (USER, PASSWORD)
ERROR_BODY = re.compile(r"^Code: (\d+)\. DB::Exception: .+ \(([A-Z_]+)\) \(version [0-9.]+\)\n$", re.DOTALL)


def post(port: Port, sql: str | bytes, **kwargs: Any) -> httpx.Response:
    return httpx.post(port.url + "/", content=sql, auth=kwargs.pop("auth", AUTH), timeout=60, **kwargs)


def test_root_and_ping_answer_ok_without_credentials(port: Port) -> None:
    for path in ("/", "/ping", "/replicas_status"):
        r = httpx.get(port.url + path)
        assert (r.status_code, r.text) == (200, "Ok.\n")


def test_get_with_query_parameter(port: Port) -> None:
    r = httpx.get(port.url + "/", params={"query": "SELECT 1"}, auth=AUTH)
    assert (r.status_code, r.text) == (200, "1\n")
    assert r.headers["x-clickhouse-format"] == "TabSeparated"
    assert r.headers["content-type"] == "text/tab-separated-values; charset=UTF-8"


def test_post_body_and_query_parameter_are_joined_by_a_line_feed(port: Port) -> None:
    # docs: `echo '1' | curl 'http://localhost:8123/?query=SELECT' --data-binary @-` -> 1
    r = post(port, "1", params={"query": "SELECT"})
    assert (r.status_code, r.text) == (200, "1\n")


def test_response_headers(port: Port, events: list[dict[str, Any]]) -> None:
    r = post(port, "SELECT count() FROM events", params={"query_id": "my-query-1"})
    assert r.status_code == 200 and r.text == f"{len(events)}\n"
    assert r.headers["x-clickhouse-query-id"] == "my-query-1"
    assert r.headers["x-clickhouse-timezone"] == port.qp.engine.timezone
    summary = json.loads(r.headers["x-clickhouse-summary"])
    assert set(summary) == {"read_rows", "read_bytes", "written_rows", "written_bytes", "total_rows_to_read",
                            "result_rows", "result_bytes", "elapsed_ns"}
    assert all(isinstance(v, str) and v.isdigit() for v in summary.values())
    assert summary["result_rows"] == "1" and int(summary["elapsed_ns"]) > 0
    generated = post(port, "SELECT 1").headers["x-clickhouse-query-id"]
    assert re.fullmatch(r"[0-9a-f-]{36}", generated)


@pytest.mark.parametrize("how", ["clause", "param", "header"])
@pytest.mark.parametrize("fmt", ["JSON", "JSONCompact", "JSONEachRow", "TabSeparatedWithNamesAndTypes", "CSVWithNames",
                                 "RowBinaryWithNamesAndTypes", "Native"])
def test_formats(port: Port, fmt: str, how: str, events: list[dict[str, Any]]) -> None:
    sql = ("SELECT channel, toUInt64(count()) AS n FROM events WHERE site_id = 'example.com' "
           "GROUP BY channel ORDER BY channel")
    want = sorted(Counter(e["channel"] for e in events if e["site_id"] == "example.com").items())
    if how == "clause":
        r = post(port, f"{sql} FORMAT {fmt}")
    elif how == "param":
        r = post(port, sql, params={"default_format": fmt})
    else:
        r = post(port, sql, headers={"X-ClickHouse-Format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["x-clickhouse-format"] == fmt
    assert r.headers["content-type"] == port.qp.engine.canonical_format(fmt)[1]
    assert parse(fmt, r.content) == want


def parse(fmt: str, body: bytes) -> list[tuple[str, int]]:
    """Independent readers of each format (JSON, CSV via the stdlib; binary ones by hand)."""
    if fmt == "JSON":
        doc = json.loads(body)
        assert [m["name"] for m in doc["meta"]] == ["channel", "n"] and doc["rows"] == len(doc["data"])
        return [(d["channel"], int(d["n"])) for d in doc["data"]]
    if fmt == "JSONCompact":
        return [(c, int(n)) for c, n in json.loads(body)["data"]]
    if fmt == "JSONEachRow":
        return [(d["channel"], int(d["n"])) for d in map(json.loads, body.decode().splitlines())]
    if fmt == "TabSeparatedWithNamesAndTypes":
        lines = body.decode().splitlines()
        assert lines[:2] == ["channel\tn", "LowCardinality(String)\tUInt64"]
        return [(c, int(n)) for c, n in (line.split("\t") for line in lines[2:])]
    if fmt == "CSVWithNames":
        rows = list(csv.reader(io.StringIO(body.decode())))
        assert rows[0] == ["channel", "n"]
        return [(c, int(n)) for c, n in rows[1:]]
    reader = NativeReader(body, 0)  # its byte primitives
    if fmt == "RowBinaryWithNamesAndTypes":
        count = reader.varint()
        names = [reader.string() for _ in range(count)]
        types = [reader.string() for _ in range(count)]
        assert (names, types) == (["channel", "n"], ["LowCardinality(String)", "UInt64"])
        out = []
        while not reader.done():
            out.append((reader.string(), reader.u64()))
        return out
    # Native (revision 0: no BlockInfo; LowCardinality with its dictionary)
    columns, num_rows = reader.varint(), reader.varint()
    assert columns == 2
    assert (reader.string(), reader.string()) == ("channel", "LowCardinality(String)")
    assert reader.u64() == 1  # keys serialization version
    index_type = reader.u64()
    keys = [reader.string() for _ in range(reader.u64())]
    assert reader.u64() == num_rows
    width = 1 << (index_type & 0xFF)
    channels = [keys[int.from_bytes(reader.take(width), "little")] for _ in range(num_rows)]
    assert (reader.string(), reader.string()) == ("n", "UInt64")
    counts = [reader.u64() for _ in range(num_rows)]
    assert reader.done()
    return list(zip(channels, counts, strict=True))


def test_format_clause_wins_over_header_and_default_is_tabseparated(port: Port) -> None:
    r = post(port, "SELECT 1 AS x FORMAT JSONEachRow", headers={"X-ClickHouse-Format": "CSV"})
    assert (r.headers["x-clickhouse-format"], r.text) == ("JSONEachRow", '{"x":1}\n')
    assert post(port, "SELECT 'a' AS x, 2 AS y").text == "a\t2\n"


def test_query_parameters_in_the_url(port: Port) -> None:
    r = post(port, "SELECT {s:String} AS s, {n:UInt8} + 1 AS n, {a:Array(UInt8)} AS a FORMAT JSONEachRow",
             params={"param_s": "tab\\there", "param_n": "41", "param_a": "[1,2]"})
    assert r.status_code == 200, r.text
    assert json.loads(r.text) == {"s": "tab\there", "n": 42, "a": [1, 2]}
    missing = post(port, "SELECT {s:String}")
    assert (missing.status_code, missing.headers["x-clickhouse-exception-code"]) == (500, "456")


def test_credentials_three_ways(port: Port) -> None:
    headers = {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD}
    assert post(port, "SELECT 1", auth=None, headers=headers).text == "1\n"
    assert post(port, "SELECT 1", auth=None, params={"user": USER, "password": PASSWORD}).text == "1\n"
    assert post(port, "SELECT 1").text == "1\n"


@pytest.mark.parametrize("kwargs", [
    {"auth": (USER, "wrong")},
    {"auth": ("someone", PASSWORD)},
    {"auth": None},  # no credentials: user `default`, empty password
    {"auth": None, "params": {"user": USER, "password": "wrong"}},
    {"auth": None, "headers": {"X-ClickHouse-User": USER, "X-ClickHouse-Key": "wrong"}},
    {"auth": None, "headers": {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD, "Authorization": "Basic eDp5"}},
    {"auth": None, "headers": {"Authorization": "Bearer abc"}},
    {"params": {"user": USER, "password": PASSWORD}},  # Basic and parameters at once
])
def test_authentication_failures(port: Port, kwargs: dict[str, Any]) -> None:
    r = post(port, "SELECT 1", **kwargs)
    assert r.status_code == 403
    assert r.headers["x-clickhouse-exception-code"] == "516"
    assert ERROR_BODY.match(r.text) and "(AUTHENTICATION_FAILED)" in r.text


def test_gzip_response_when_enabled(port: Port) -> None:
    sql = "SELECT number FROM numbers(1000)"
    r = httpx.post(port.url + "/", content=sql, auth=AUTH, headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.text.splitlines()[-1] == "999"
    r = httpx.post(port.url + "/", content=sql, auth=AUTH, headers={"Accept-Encoding": "gzip"},
                   params={"enable_http_compression": "0"})
    assert "content-encoding" not in r.headers
    r = httpx.post(port.url + "/", content=sql, auth=AUTH, headers={"Accept-Encoding": "deflate"})
    assert r.headers["content-encoding"] == "deflate"
    r = httpx.post(port.url + "/", content=sql, auth=AUTH, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers


def test_compression_off_by_default_when_configured_like_clickhouse(start_port: Any) -> None:
    strict = start_port(http_compression_default=False)
    sql = "SELECT number FROM numbers(100)"
    r = httpx.post(strict.url + "/", content=sql, auth=AUTH, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers
    r = httpx.post(strict.url + "/", content=sql, auth=AUTH, headers={"Accept-Encoding": "gzip"},
                   params={"enable_http_compression": "1"})
    assert r.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize("encoding,compress", [
    ("gzip", gzip.compress), ("deflate", zlib.compress),
])
def test_compressed_request_bodies(port: Port, encoding: str, compress: Any) -> None:
    r = post(port, compress(b"SELECT 40 + 2"), headers={"Content-Encoding": encoding})
    assert (r.status_code, r.text) == (200, "42\n")


def test_unsupported_or_corrupt_request_encoding(port: Port) -> None:
    r = post(port, b"SELECT 1", headers={"Content-Encoding": "snappy"})
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (501, "48")
    r = post(port, b"not gzip", headers={"Content-Encoding": "gzip"})
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (400, "36")


def test_decompression_bomb_is_bounded(port: Port) -> None:
    bomb = gzip.compress(b"SELECT 1 -- " + b" " * (8 << 20))
    r = post(port, bomb, headers={"Content-Encoding": "gzip"})
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (400, "62")


def test_session_keeps_use_and_settings(port: Port) -> None:
    params = {"session_id": "sess-1"}
    assert post(port, "USE system", params=params).status_code == 200
    assert post(port, "SET max_result_rows = 3, date_time_output_format = 'iso'", params=params).status_code == 200
    assert post(port, "SELECT currentDatabase()", params=params).text == "system\n"
    assert post(port, "SELECT toDateTime('2025-01-02 03:04:05', 'UTC')", params=params).text == "2025-01-02T03:04:05Z\n"
    r = post(port, "SELECT number FROM numbers(10)", params=params)
    assert r.headers["x-clickhouse-exception-code"] == "396"
    # another session, or none, is not affected
    assert post(port, "SELECT currentDatabase()").text == "clickstream\n"
    assert post(port, "SELECT currentDatabase()", params={"session_id": "sess-2"}).text == "clickstream\n"
    # close_session=1 forgets it
    post(port, "SELECT 1", params={**params, "close_session": "1"})
    r = post(port, "SELECT 1", params={**params, "session_check": "1"})
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (500, "372")


def test_session_timeout_bounds(port: Port) -> None:
    r = post(port, "SELECT 1", params={"session_id": "t", "session_timeout": "99999"})
    assert r.headers["x-clickhouse-exception-code"] == "374"
    r = post(port, "SELECT 1", params={"session_id": "t", "session_timeout": "abc"})
    assert r.headers["x-clickhouse-exception-code"] == "374"
    assert post(port, "SELECT 1", params={"session_id": "t", "session_timeout": "5"}).text == "1\n"


def test_harmless_settings_as_url_parameters(port: Port) -> None:
    r = post(port, "SELECT number FROM numbers(10) FORMAT JSONEachRow",
             params={"limit": "2", "output_format_json_quote_64bit_integers": "1", "max_result_rows": "50",
                     "send_progress_in_http_headers": "1", "wait_end_of_query": "1", "readonly": "2",
                     "cancel_http_readonly_queries_on_client_close": "1"})
    assert r.status_code == 200, r.text
    assert r.text.splitlines() == ['{"number":"0"}', '{"number":"1"}']
