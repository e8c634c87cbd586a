"""Metabase, emulated: metabase-clickhouse-driver 1.53 uses clickhouse-jdbc 0.8.4 (jdbc-v2 on client-v2).
client-v2 (HttpAPIClientHelper.java) sends by default `compress=1` (COMPRESS_SERVER_RESPONSE=true,
USE_HTTP_COMPRESSION=false) and reads the body as ClickHouse-native LZ4 blocks whose CityHash128 it
verifies; user and password as X-ClickHouse-User / X-ClickHouse-Key, the database as
X-ClickHouse-Database, the query id as X-ClickHouse-Query-Id, `<sql> \\n FORMAT RowBinaryWithNamesAndTypes`
in the body, and Metabase's report timezone as the `session_timezone` setting. (No JVM registry here,
so the JDBC driver itself is not run; its decoder is replaced by clickhouse-driver's, which checks the
same checksum.) Errors come back as plain text, which client-v2 reads after an "invalid LZ4 magic"."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.integration.query_port.conftest import PASSWORD, USER, Port
from tests.integration.query_port.native_reader import NativeReader

lz4_decompressor = pytest.importorskip("clickhouse_driver.compression.lz4")
from clickhouse_driver.reader import read_binary_uint128  # noqa: E402

from reports.query_port.compression import NATIVE_COMPRESSION_BLOCK_BYTES, native_compress  # noqa: E402


def native_decompress(body: bytes) -> bytes:
    """clickhouse-driver's CompressedBlockInputStream loop: checksum, method byte, checked block."""
    stream = io.BytesIO(body)
    out = bytearray()
    while stream.tell() < len(body):
        checksum = read_binary_uint128(stream)
        method = stream.read(1)[0]
        assert method == 0x82
        out += lz4_decompressor.Decompressor(stream).get_decompressed_data(method, checksum, 1)
    return bytes(out)


def read_rowbinary(data: bytes) -> tuple[list[str], list[str], list[tuple[Any, ...]]]:
    reader = NativeReader(data, 0)
    count = reader.varint()
    names = [reader.string() for _ in range(count)]
    types = [reader.string() for _ in range(count)]
    rows = []
    while not reader.done():
        row: list[Any] = []
        for t in types:
            row.append(reader.string() if "String" in t else reader.u64())
        rows.append(tuple(row))
    return names, types, rows


def jdbc_v2(port: Port, sql: str, **settings: str) -> httpx.Response:
    return httpx.post(port.url + "/", params={"compress": "1", **settings},
                      content=(sql + " \n FORMAT RowBinaryWithNamesAndTypes").encode(),
                      headers={"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD,
                               "X-ClickHouse-Database": "clickstream", "X-ClickHouse-Query-Id": "mb-1",
                               # client-v2 disables Apache HttpClient's content compression: no gzip asked
                               "Accept-Encoding": "identity",
                               "User-Agent": "Metabase/v0.56 clickhouse-java-v2/0.8.4"}, timeout=30)


def test_metabase_query_with_native_compression(port: Port, events: list[dict[str, Any]]) -> None:
    r = jdbc_v2(port, "SELECT channel, count() AS n FROM events GROUP BY channel ORDER BY channel",
                session_timezone="Europe/Berlin")
    assert r.status_code == 200 and "content-encoding" not in r.headers
    assert r.headers["x-clickhouse-timezone"] == "Europe/Berlin"
    assert r.headers["x-clickhouse-query-id"] == "mb-1"
    names, types, rows = read_rowbinary(native_decompress(r.content))
    assert (names, types) == (["channel", "n"], ["LowCardinality(String)", "UInt64"])
    assert dict(rows) == Counter(e["channel"] for e in events)


def test_large_results_are_split_into_checked_blocks(port: Port) -> None:
    r = jdbc_v2(port, "SELECT toString(number) AS s FROM numbers(90000)")
    assert r.status_code == 200
    data = native_decompress(r.content)
    assert len(data) > NATIVE_COMPRESSION_BLOCK_BYTES // 2
    assert read_rowbinary(data)[2][-1] == ("89999",)


def test_metabase_errors_stay_plain_text(port: Port) -> None:
    r = jdbc_v2(port, "SELECT * FROM nope")
    assert r.status_code == 404 and r.headers["x-clickhouse-exception-code"] == "60"
    assert r.text.startswith("Code: 60. DB::Exception:")


def test_native_compression_round_trip_and_decompress_refused(port: Port) -> None:
    payload = bytes(range(256)) * 9000
    assert native_decompress(native_compress(payload)) == payload
    assert native_compress(b"") == b""
    r = httpx.post(port.url + "/", params={"decompress": "1"}, content=b"SELECT 1", auth=(USER, PASSWORD))
    assert (r.status_code, r.headers["x-clickhouse-exception-code"]) == (501, "48")
