"""A Native-format reader written from clickhouse-go's decoder (lib/proto/block.go Block.Decode, v2.47),
independent of query_port.native_with_revision: it decodes values, where the port only re-frames.

    [BlockInfo if revision > 0: uvarint 1, bool, uvarint 2, int32, uvarint 0]
    uvarint columns, uvarint rows
    per column: string name, string type, [bool has_custom if revision >= 54454],
                [state prefix: UInt64 version per LowCardinality], data
"""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal
from typing import Any

CUSTOM_SERIALIZATION = 54454


class NativeReader:
    def __init__(self, data: bytes, revision: int) -> None:
        self.data, self.pos, self.revision = data, 0, revision

    def blocks(self) -> list[tuple[list[str], list[str], list[list[Any]]]]:
        """[(names, types, columns)] for every block."""
        out = []
        while self.pos < len(self.data):
            if self.revision > 0:
                assert self.varint() == 1
                self.take(1)
                assert self.varint() == 2
                assert struct.unpack("<i", self.take(4))[0] == -1
                assert self.varint() == 0
            columns, rows = self.varint(), self.varint()
            names, types, values = [], [], []
            for _ in range(columns):
                names.append(self.string())
                types.append(self.string())
                if self.revision >= CUSTOM_SERIALIZATION:
                    assert self.take(1) == b"\x00", "custom serialization flag"
                if rows:
                    self.prefix(types[-1])
                values.append(self.column(types[-1], rows))
            out.append((names, types, values))
        return out

    def rows(self) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = []
        for _, _, columns in self.blocks():
            result.extend(zip(*columns, strict=True))
        return result

    # -- primitives
    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) != n:
            raise ValueError("truncated Native data")
        self.pos += n
        return chunk

    def varint(self) -> int:
        shift = value = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def string(self) -> str:
        return self.take(self.varint()).decode()

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "little")

    def done(self) -> bool:
        return self.pos == len(self.data)

    def prefix(self, type_name: str) -> None:
        if type_name.startswith("LowCardinality("):
            assert struct.unpack("<Q", self.take(8))[0] == 1  # SharedDictionariesWithAdditionalKeys
        elif type_name.startswith(("Nullable(", "Array(")):
            self.prefix(type_name[type_name.index("(") + 1:-1])

    def column(self, t: str, n: int) -> list[Any]:
        fixed = {"UInt8": "<B", "UInt16": "<H", "UInt32": "<I", "UInt64": "<Q", "Int8": "<b", "Int16": "<h",
                 "Int32": "<i", "Int64": "<q", "Float32": "<f", "Float64": "<d"}
        if t in fixed:
            size = struct.calcsize(fixed[t])
            return [struct.unpack(fixed[t], self.take(size))[0] for _ in range(n)]
        if t == "String":
            return [self.string() for _ in range(n)]
        if t == "Date":
            return [dt.date(1970, 1, 1) + dt.timedelta(days=struct.unpack("<H", self.take(2))[0]) for _ in range(n)]
        if t.startswith("DateTime64("):
            scale = int(t[len("DateTime64("):].split(",")[0].rstrip(")"))
            ticks = [struct.unpack("<q", self.take(8))[0] for _ in range(n)]
            return [dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=v * 10**6 // 10**scale)
                    for v in ticks]
        if t.startswith("DateTime"):
            return [dt.datetime.fromtimestamp(struct.unpack("<I", self.take(4))[0], dt.UTC) for _ in range(n)]
        if t.startswith("Decimal("):
            precision, scale = (int(x) for x in t[8:-1].split(","))
            width = 4 if precision <= 9 else 8 if precision <= 18 else 16 if precision <= 38 else 32
            return [Decimal(int.from_bytes(self.take(width), "little", signed=True)).scaleb(-scale) for _ in range(n)]
        if t.startswith("Nullable("):
            nulls = self.take(n)
            values = self.column(t[9:-1], n)
            return [None if nulls[i] else values[i] for i in range(n)]
        if t.startswith("Array("):
            offsets = [struct.unpack("<Q", self.take(8))[0] for _ in range(n)]
            flat = self.column(t[6:-1], offsets[-1] if offsets else 0)
            return [flat[a:b] for a, b in zip([0, *offsets], offsets, strict=False)]
        if t.startswith("LowCardinality("):
            inner = t[15:-1]
            nullable = inner.startswith("Nullable(")
            index_type = struct.unpack("<Q", self.take(8))[0]
            keys = self.column(inner[9:-1] if nullable else inner, struct.unpack("<Q", self.take(8))[0])
            assert struct.unpack("<Q", self.take(8))[0] == n
            width = 1 << (index_type & 0xFF)
            indexes = [int.from_bytes(self.take(width), "little") for _ in range(n)]
            return [None if nullable and i == 0 else keys[i] for i in indexes]
        raise NotImplementedError(t)
