"""Native format at a client protocol revision: what chDB writes, re-framed as ClickHouse's server.

chDB writes Native as for revision 0 (like clickhouse-local) and has no `client_protocol_version`
setting (verified on chDB 26.9). clickhouse-connect probes `client_protocol_version=54405` and falls
back to 0 without it; clickhouse-go (Grafana's data source in HTTP mode) asks for 54460 and cannot
decode a revision-0 block at all. `native_with_revision` inserts what a server's NativeWriter adds
for the revision (src/Formats/NativeWriter.cpp, src/Core/BlockInfo.cpp); column data is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

#: Revisions that change the Native byte layout outside column data (src/Core/ProtocolDefines.h).
REVISION_WITH_CUSTOM_SERIALIZATION: Final = 54454
REVISION_WITH_OUT_OF_ORDER_BUCKETS: Final = 54480

_FIXED_WIDTH: Final[Mapping[str, int]] = {
    **dict.fromkeys(("UInt8", "Int8", "Bool", "Enum8", "Nothing"), 1),
    **dict.fromkeys(("UInt16", "Int16", "Date", "Enum16", "BFloat16"), 2),
    **dict.fromkeys(("UInt32", "Int32", "Float32", "Date32", "DateTime", "IPv4", "Decimal32", "Time"), 4),
    **dict.fromkeys(("UInt64", "Int64", "Float64", "DateTime64", "Decimal64", "Time64"), 8),
    **dict.fromkeys(("UInt128", "Int128", "UUID", "IPv6", "Decimal128"), 16),
    **dict.fromkeys(("UInt256", "Int256", "Decimal256"), 32),
}
_GEO_ALIASES: Final[Mapping[str, str]] = {
    "Point": "Tuple(Float64, Float64)", "Ring": "Array(Point)", "LineString": "Array(Point)",
    "MultiLineString": "Array(LineString)", "Polygon": "Array(Ring)", "MultiPolygon": "Array(Polygon)",
}
_LC_NEED_GLOBAL_DICTIONARY: Final = 1 << 8
_LC_HAS_ADDITIONAL_KEYS: Final = 1 << 9


class NativeTranscodeError(Exception):
    """The Native stream has a type whose layout the port does not know (AggregateFunction, JSON,
    Dynamic, Variant, Object): it cannot be re-encoded for the client's protocol revision."""


def _split_type(type_name: str) -> tuple[str, list[str]]:
    """'Map(String, Array(UInt8))' -> ('Map', ['String', 'Array(UInt8)']); quotes and backquotes kept."""
    type_name = type_name.strip()
    start = type_name.find("(")
    if start < 0 or not type_name.endswith(")"):
        return type_name, []
    inner = type_name[start + 1:-1]
    args: list[str] = []
    depth, quote_char, current = 0, "", []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if quote_char:
            current.append(ch)
            if ch == "\\" and i + 1 < len(inner):
                current.append(inner[i + 1])
                i += 1
            elif ch == quote_char:
                quote_char = ""
        elif ch in "'`":
            quote_char = ch
            current.append(ch)
        elif ch == "(":
            depth += 1
            current.append(ch)
        elif ch == ")":
            depth -= 1
            current.append(ch)
        elif ch == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
        i += 1
    if current or args:
        args.append("".join(current).strip())
    return type_name[:start].strip(), args


def _element_type(element: str) -> str:
    """A Tuple/Nested element without its name: 'a String' -> 'String', '`a b` UInt8' -> 'UInt8'."""
    if element.startswith("`"):
        end = element.find("`", 1)
        while end > 0 and element[end - 1] == "\\":
            end = element.find("`", end + 1)
        return element[end + 1:].strip()
    depth = 0
    for i, ch in enumerate(element):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "'":
            return element
        elif ch.isspace() and depth == 0:
            return element[i:].strip()
    return element


def _read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise NativeTranscodeError("truncated Native stream (varint)")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _write_varuint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _u64(data: bytes, pos: int) -> int:
    if pos + 8 > len(data):
        raise NativeTranscodeError("truncated Native stream (UInt64)")
    return int.from_bytes(data[pos:pos + 8], "little")


def _normalize(type_name: str) -> tuple[str, list[str]]:
    name, args = _split_type(type_name)
    while name in _GEO_ALIASES and not args:
        name, args = _split_type(_GEO_ALIASES[name])
    if name == "SimpleAggregateFunction" and len(args) >= 2:
        return _normalize(args[-1])
    if name == "Nested":
        return "Array", [f"Tuple({', '.join(args)})"]
    return name, args


def _prefix_size(type_name: str) -> int:
    """Bytes of serializeBinaryBulkStatePrefix for a column of this type (written before its data)."""
    name, args = _normalize(type_name)
    if name == "LowCardinality":
        return 8  # KeysSerializationVersion
    if name in ("Array", "Nullable"):
        return _prefix_size(args[0])
    if name == "Map":
        return _prefix_size(args[0]) + _prefix_size(args[1])
    if name == "Tuple":
        return sum(_prefix_size(_element_type(a)) for a in args)
    if name in ("AggregateFunction", "JSON", "Object", "Dynamic", "Variant"):
        raise NativeTranscodeError(f"type {type_name}")
    return 0


def _skip_data(data: bytes, pos: int, type_name: str, rows: int) -> int:
    """Position after `rows` values of `type_name` (serializeBinaryBulk layout) starting at `pos`."""
    if rows == 0:
        return pos
    name, args = _normalize(type_name)
    width = _FIXED_WIDTH.get(name)
    if width is None and name.startswith("Interval"):
        width = 8
    if width is None and name == "Decimal":
        precision = int(args[0])
        width = 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
    if width is None and name == "FixedString":
        width = int(args[0])
    if width is not None:
        end = pos + width * rows
    elif name == "String":
        end = pos
        for _ in range(rows):
            length, end = _read_varuint(data, end)
            end += length
    elif name == "Nullable":
        end = _skip_data(data, pos + rows, args[0], rows)
    elif name in ("Array", "Map"):
        offsets_end = pos + 8 * rows
        total = _u64(data, offsets_end - 8)
        if name == "Array":
            end = _skip_data(data, offsets_end, args[0], total)
        else:
            end = _skip_data(data, _skip_data(data, offsets_end, args[0], total), args[1], total)
    elif name == "Tuple":
        end = pos
        for element in args:
            end = _skip_data(data, end, _element_type(element), rows)
    elif name == "LowCardinality":
        end = _skip_low_cardinality(data, pos, args[0], rows)
    else:
        raise NativeTranscodeError(f"type {type_name}")
    if end > len(data):
        raise NativeTranscodeError("truncated Native stream (column data)")
    return end


def _skip_low_cardinality(data: bytes, pos: int, inner: str, rows: int) -> int:
    """SerializationLowCardinality: per piece, index type (UInt64: key width + flags), the additional
    keys (UInt64 count + keys of the non-Nullable inner type), UInt64 row count, the indexes."""
    inner_name, inner_args = _normalize(inner)
    dictionary_type = inner_args[0] if inner_name == "Nullable" else inner
    done = 0
    while done < rows:
        index_type = _u64(data, pos)
        pos += 8
        if index_type & _LC_NEED_GLOBAL_DICTIONARY:
            raise NativeTranscodeError("LowCardinality with a global dictionary")
        if index_type & _LC_HAS_ADDITIONAL_KEYS:
            keys = _u64(data, pos)
            pos = _skip_data(data, pos + 8, dictionary_type, keys)
        piece_rows = _u64(data, pos)
        pos += 8 + piece_rows * (1 << (index_type & 0xFF))
        done += piece_rows
    return pos


def native_with_revision(data: bytes, revision: int) -> bytes:
    """Re-encode a Native stream written for revision 0 (what chDB writes, like clickhouse-local) as
    ClickHouse's NativeWriter writes it for `client_protocol_version=revision` over HTTP:
    a BlockInfo before each block when revision > 0 (fields 1 is_overflows=false, 2 bucket_num=-1,
    3 out_of_order_buckets=[] from 54480) and a `has_custom` byte (0) after each column's type from
    54454 (src/Formats/NativeWriter.cpp, src/Core/BlockInfo.cpp). Column data is unchanged for the
    types handled here. Raises NativeTranscodeError for other types or a malformed stream.
    """
    if revision <= 0:
        return data
    block_info = bytearray(b"\x01\x00\x02\xff\xff\xff\xff")
    if revision >= REVISION_WITH_OUT_OF_ORDER_BUCKETS:
        block_info += b"\x03\x00"
    block_info += b"\x00"
    custom = revision >= REVISION_WITH_CUSTOM_SERIALIZATION
    out = bytearray()
    pos = 0
    while pos < len(data):
        out += block_info
        columns, pos = _read_varuint(data, pos)
        rows, pos = _read_varuint(data, pos)
        _write_varuint(columns, out)
        _write_varuint(rows, out)
        for _ in range(columns):
            start = pos
            length, pos = _read_varuint(data, pos)
            pos += length
            length, type_start = _read_varuint(data, pos)
            type_name = data[type_start:type_start + length].decode("utf-8", "replace")
            pos = type_start + length
            out += data[start:pos]
            if custom:
                out.append(0)
            if rows:
                data_start = pos
                pos = _skip_data(data, pos + _prefix_size(type_name), type_name, rows)
                out += data[data_start:pos]
    return bytes(out)
