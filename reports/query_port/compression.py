"""Compression on the query port, as ClickHouse's HTTP interface does it.

Responses: gzip or deflate when the effective `enable_http_compression` is 1 and Accept-Encoding
asks (clickhouse.com/docs/interfaces/http "Compression"); `compress=1` is ClickHouse's own LZ4
block framing with CityHash128 checksums, what Metabase's JDBC driver asks for by default.
Requests: Content-Encoding gzip, deflate, xz, bz2, lz4 (clickhouse-connect sends lz4) and zstd,
decompressed with an output bound (a gzip bomb is refused, not inflated).
"""

from __future__ import annotations

import bz2
import importlib
import importlib.util
import lzma
import re
import zlib
from typing import Any, Final

from reports.query_port.errors import NOT_IMPLEMENTED, error

#: ClickHouse's native compression frame (src/Compression/CompressedWriteBuffer.cpp, ICompressionCodec):
#: 16-byte CityHash128 v1.0.2 of the rest, method byte (0x82 = LZ4), UInt32 size of the compressed block
#: with its 9-byte header, UInt32 size of the uncompressed data, LZ4 block; blocks of at most
#: max_compress_block_size (1 MiB) of uncompressed data.
NATIVE_COMPRESSION_BLOCK_BYTES: Final = 1 << 20
_LZ4_METHOD: Final = 0x82


def native_compression_available() -> bool:
    """True when `compress=1` can be honoured (the lz4 and clickhouse-cityhash modules import)."""
    return all(importlib.util.find_spec(m) is not None for m in ("lz4", "clickhouse_cityhash"))


def native_compress(data: bytes) -> bytes:
    """`data` in ClickHouse's native LZ4 framing, what the server sends for `compress=1`
    (docs/interfaces/http "Compression"; read by clickhouse-java client-v2, which Metabase's driver
    uses with compress=1 by default). The checksum's two UInt64 are written high half first, as
    clickhouse-driver and clickhouse-java read them."""
    lz4_block: Any = importlib.import_module("lz4.block")
    cityhash: Any = importlib.import_module("clickhouse_cityhash.cityhash")
    out = bytearray()
    for start in range(0, len(data), NATIVE_COMPRESSION_BLOCK_BYTES):
        chunk = data[start:start + NATIVE_COMPRESSION_BLOCK_BYTES]
        compressed: bytes = lz4_block.compress(chunk, store_size=False)
        frame = bytes([_LZ4_METHOD]) + (len(compressed) + 9).to_bytes(4, "little") + len(chunk).to_bytes(4, "little")
        frame += compressed
        checksum: int = cityhash.CityHash128(frame)
        out += (checksum >> 64).to_bytes(8, "little") + (checksum & (2**64 - 1)).to_bytes(8, "little") + frame
    return bytes(out)


class Decoder:
    """Incremental decompression with an output bound per call (zlib, lzma, bz2, lz4.frame and zstd
    decompressors share `decompress(data, max_length)`); output past the bound means "too large"."""

    def __init__(self, decompressor: Any, name: str) -> None:
        self._d = decompressor
        self.name = name

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out: bytes = self._d.decompress(data, max(1, max_length))
        unconsumed: bytes = getattr(self._d, "unconsumed_tail", b"")
        if len(out) >= max_length or unconsumed:
            return out + b"\0"  # the caller sees one byte over its limit
        return out

    def finish(self, max_length: int) -> bytes:
        flush = getattr(self._d, "flush", None)
        if flush is not None:
            return bytes(flush())
        return b""


CORRUPT_ERRORS: tuple[type[BaseException], ...] = (zlib.error, OSError, EOFError, ValueError, RuntimeError)


def decoder(encoding: str) -> Decoder | None:
    """A decoder for a Content-Encoding; None for identity. Raises 48 for an unsupported one."""
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return Decoder(zlib.decompressobj(16 + zlib.MAX_WBITS), encoding)
    if encoding == "deflate":
        return Decoder(zlib.decompressobj(), encoding)
    if encoding == "xz":
        return Decoder(lzma.LZMADecompressor(), encoding)
    if encoding == "bz2":
        return Decoder(bz2.BZ2Decompressor(), encoding)
    for name, module, attribute in (("lz4", "lz4.frame", "LZ4FrameDecompressor"),
                                    ("zstd", "compression.zstd", "ZstdDecompressor"),
                                    ("zstd", "backports.zstd", "ZstdDecompressor")):
        if encoding == name:
            try:
                return Decoder(getattr(importlib.import_module(module), attribute)(), encoding)
            except ImportError:
                continue
    raise error(NOT_IMPLEMENTED, f"Content-Encoding {encoding} is not supported by the query port "
                                  "(gzip, deflate, xz, bz2, lz4, zstd)")


def choose_encoding(accept_encoding: str) -> str | None:
    """gzip, else deflate, when the client accepts it (q > 0); ClickHouse supports more methods, the
    port these two (every client checked sends gzip among others)."""
    accepted: dict[str, float] = {}
    for item in accept_encoding.split(","):
        token, _, params = item.strip().partition(";")
        q = 1.0
        match = re.search(r"q=([0-9.]+)", params)
        if match:
            try:
                q = float(match.group(1))
            except ValueError:
                q = 0.0
        if token:
            accepted[token.strip().lower()] = q
    for method in ("gzip", "deflate"):
        if accepted.get(method, 0) > 0:
            return method
    return None
