"""Query port functions checked against the engine they describe: error codes, parameter escaping,
Native re-framing at every protocol revision for every column type (read back by an independent
decoder, tests/integration/query_port/native_reader.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chdb
import pytest

from reports.query_port import errors, guard, native
from tests.integration.query_port.native_reader import NativeReader


@pytest.fixture(scope="module")
def conn(engine_dir: Path, writer: Any) -> Iterator[Any]:
    connection = chdb.connect(f"{engine_dir}?readonly=1")
    yield connection
    connection.close()


def test_error_codes_are_the_engines(conn: Any) -> None:
    codes = ", ".join(str(c) for c in errors.ERROR_NAMES)
    rows = conn.query(f"SELECT number, errorCodeToName(number) FROM numbers(2000) WHERE number IN ({codes})",
                      "TabSeparated").bytes().decode().splitlines()
    assert dict((int(a), b) for a, b in (r.split("\t") for r in rows)) == dict(errors.ERROR_NAMES)
    names = set(conn.query("SELECT errorCodeToName(number) FROM numbers(2000)",
                           "TabSeparated").bytes().decode().split())
    assert set(errors.STATUS_BY_NAME) <= names  # every name of exceptionCodeToHTTPStatus.cpp exists


def test_escape_param_round_trips_through_the_engine(conn: Any) -> None:
    text = "a\tb\nc\\d 'e' \\N \r €"
    got = conn.query("SELECT {q:String}", "TabSeparatedRaw", params={"q": guard.escape_param(text)}).bytes().decode()
    assert got == text + "\n"


NATIVE_TYPES = [
    "toUInt8(number)", "toInt256(number) - 5", "toFloat32(number) / 3", "toString(number)",
    "toFixedString(toString(number), 4)",
    "toDecimal256(number, 10)", "toDecimal32(number, 2)", "toUUID('61f0c404-5cb3-11e7-907b-a6006ad3dba0')",
    "toIPv6('::1')", "toIPv4('1.2.3.4')", "toDate32('2020-01-01')", "toDateTime64(number, 6, 'UTC')", "now()",
    "CAST(number % 2 AS Enum16('a' = 0, 'b' = 1))", "toLowCardinality(toString(number % 3))",
    "toLowCardinality(if(number % 2, NULL, toString(number)))", "if(number % 2, NULL, number)", "NULL",
    "[number, number + 1]", "[[toLowCardinality('a')], []]", "map(toString(number), [number])",
    "tuple(number, 'x', [toLowCardinality('y')])", "CAST((1, 'a'), 'Tuple(a UInt8, `b c` String)')",
    "CAST((1.5, 2.5), 'Point')", "CAST([[(1.0, 2.0)]], 'Polygon')", "toIntervalDay(number)", "number > 2",
    "CAST([(1, 'a')], 'Nested(x UInt8, y String)')", "toBFloat16(number)", "toTime(number)",
]


@pytest.mark.parametrize("expression", NATIVE_TYPES)
@pytest.mark.parametrize("revision", [54405, 54460, 54483])
def test_native_with_revision_frames_every_type(conn: Any, expression: str, revision: int) -> None:
    data = conn.query(f"SELECT {expression} AS c FROM numbers(5)", "Native").bytes()
    # one column, one block: the column data runs to the end, so the expected stream is the original
    # with BlockInfo in front and the has_custom byte after the type name
    r = native._read_varuint(data, 0)[1]
    r = native._read_varuint(data, r)[1]
    name_len, r = native._read_varuint(data, r)
    r += name_len
    type_len, r = native._read_varuint(data, r)
    header_end = r + type_len
    block_info = b"\x01\x00\x02\xff\xff\xff\xff" + (b"\x03\x00" if revision >= 54480 else b"") + b"\x00"
    custom = b"\x00" if revision >= 54454 else b""
    assert native.native_with_revision(data, revision) == block_info + data[:header_end] + custom + data[header_end:]


def test_native_with_revision_many_blocks_and_columns(engine_dir: Path) -> None:
    small_blocks = chdb.connect(f"{engine_dir}?readonly=1&max_block_size=7000")
    data = small_blocks.query("SELECT number, toLowCardinality(toString(number % 7)) AS s, [number] AS a "
                              "FROM numbers(100000)", "Native").bytes()
    small_blocks.close()
    out = native.native_with_revision(data, 54460)
    blocks = NativeReader(out, 54460).blocks()
    assert len(blocks) > 10
    rows = [row for _, _, cols in blocks for row in zip(*cols, strict=True)]
    assert rows == [(n, str(n % 7), [n]) for n in range(100000)]
    assert native.native_with_revision(b"", 54460) == b""
    assert native.native_with_revision(data, 0) is data


@pytest.mark.parametrize("expression", ["CAST('{\"a\": 1}', 'JSON')", "uniqState(number)", "CAST(1, 'Dynamic')",
                                        "CAST(1, 'Variant(UInt8, String)')"])
def test_native_with_revision_refuses_unknown_layouts(conn: Any, expression: str) -> None:
    data = conn.query(f"SELECT {expression} AS c FROM numbers(2)", "Native").bytes()
    with pytest.raises(native.NativeTranscodeError):
        native.native_with_revision(data, 54460)


