"""Durable local spool: append-only segment files of length + CRC32 framed records.

Layout of `<data-dir>/spool/`:
- `<segment_id>.open`: the active segment, appended by one writer (an exclusive `flock` on
  `.writer.lock` keeps a second writer out);
- `<segment_id>.seg`: sealed segments (by size `segment_max_bytes` or age `segment_max_age_ms`),
  immutable, read by the flusher and deleted by `SpoolReader.mark_done` once ClickHouse confirmed;
- `corrupt/`: sealed segments whose framing broke mid-file (disk damage), kept for inspection.

Record framing: `<u32 little-endian payload length><u32 CRC32 (zlib) of payload><payload>`.
Payloads are never empty: a zero length marks the end of the records, because a machine crash
can leave a zero-filled tail (file size updated, data blocks not), and 8 zero bytes would
otherwise parse as a valid empty record (CRC32 of b"" is 0).
A record is at (segment_id, offset) and ends at offset + 8 + length; positions are stable for
the life of a segment, so (segment id, offset range) is a deterministic ClickHouse dedup token.

Segment ids are `<microseconds since epoch, 17 digits>-<8 hex>`: they sort in creation order and
never repeat, even after the spool directory is wiped (a repeated id would make ClickHouse drop
new data as a duplicate of an old insert).

Durability: `append` returns after `os.write`, so an acknowledged record survives a crash of the
process (SIGKILL included: the data is in the kernel's page cache). It survives a crash of the
machine once fsynced: a background thread fsyncs at most every `fsync_interval_ms` (group
commit), or, with `fsync_interval_ms=0`, the caller waits for `sync_to(position)` before
acknowledging. After a crash, a torn last record of a `.open` segment is detected by its length
or CRC and cut (`recover`), never touching the records before it.

`append` never fsyncs (it runs on the collector's event loop): a segment that reaches its size
is detached there and sealed (fsync, rename to `.seg`, directory fsync) by the background thread
or the next `sync_to`; `seal_active` and `seal_if_older` seal before they return.

Block records (the format the collector and `clickstream import` write): one framed record per
group of requests (the requests the collector accepted in one turn of its event loop, each row
completed with its own request's stamps: `group_payload`) or per import chunk, whose payload
is already what ClickHouse ingests, so the flusher checks the CRC and hands byte ranges to
`INSERT INTO events_ingest FORMAT JSONEachRow` without a Python object per event:

    BLOCK_MAGIC (4 bytes) | n (u32 little-endian) | n event ids (36 ASCII bytes each, lower case)
    | n JSONEachRow rows, each ending with b"\n"

Row i is the event as `events_ingest` takes it (sql/0007_ingest.sql: the client's fields as sent,
plus the collector's stamps and the User-Agent fields) with its spool position as its last two
fields: `"spool_segment":"<segment id>","spool_offset":<B + i>` where B is the byte offset of the
block's frame. The event ids are the rows' `event_id`s in ClickHouse's canonical text form, the
key of the flusher's client-retry memory (flusher.dedup), readable without parsing a row.

Spool positions: every event has a unique, deterministic position (segment id, offset):
- a block at byte B holding n rows gives row i the offset B + i; B + i < B + 8 + payload length
  (each row has at least one byte), so offsets never collide with the next record's;
- offsets grow in arrival order within a segment, and segment ids sort by creation time, so
  (segment id, offset) is the arrival order across one spool (docs/architecture.md "Order of
  events" breaks `ts` ties with it);
- the position is written into the row when the block is appended, so every re-flush of the
  segment (after a crash) sends the same rows with the same positions and dedup tokens; imported
  history gets its positions the same way, in the sealed segments `write_sealed_segment` writes.
A record that is not a block (the previous version wrote one JSON object per record) is at
(segment id, B); `SpoolReader.records` reads both, one `Record` per event, so a spool written
by the previous version drains after an upgrade.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from clickstream.core.files import fsync_dir

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
_pack_header = HEADER.pack
MAX_RECORD_BYTES = 16 * 1024 * 1024
#: First bytes of a block record's payload (a JSON object record starts with `{`).
BLOCK_MAGIC = b"\x00cs1"
BLOCK_HEAD = struct.Struct("<4sI")
_FRAME_AND_BLOCK_HEAD = struct.Struct("<II4sI")  # a frame's header and, if it is a block, its head
#: An event id in a block: the canonical text form of a UUID (8-4-4-4-12 hex digits, lower case).
EVENT_ID_BYTES = 36
#: The fields a block row gets from its position (the last two of every row).
POSITION_FIELDS = ("spool_segment", "spool_offset")
OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".seg"


class SpoolError(Exception):
    """Base class of spool failures."""


class SpoolFullError(SpoolError):
    """The spool holds `max_bytes` or more: the collector answers 503 with Retry-After."""


class SpoolLockedError(SpoolError):
    """Another process already writes (or flushes) this spool directory."""


class CorruptSegmentError(SpoolError):
    """A sealed segment's framing is broken at `offset` (not a torn tail: the file was sealed)."""

    def __init__(self, segment_id: str, offset: int) -> None:
        super().__init__(f"segment {segment_id} is corrupt at byte {offset}")
        self.segment_id = segment_id
        self.offset = offset


class SpoolPosition(NamedTuple):
    """A byte position in the spool: segment ids order segments, offsets order records within one
    (a NamedTuple: one is made per append, on the collector's hot path)."""

    segment_id: str
    offset: int


class Record(NamedTuple):
    """One framed record: its payload and where it starts and ends in its segment (bytes).

    A NamedTuple, not a frozen dataclass: the flusher builds one per event and a tuple is ~3x
    cheaper to create (BENCHMARKS.md, flusher)."""

    segment_id: str
    offset: int
    end: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment file: its id (the file's stem), path and size in bytes when listed."""

    segment_id: str
    path: Path
    size_bytes: int

    @property
    def created_s(self) -> float:
        """When the segment was created (epoch seconds), from its id."""
        return segment_created_us(self.segment_id) / 1e6


def frame(payload: bytes) -> bytes:
    """One record's bytes on disk: header (length, CRC32) + payload.

    Raises ValueError for an empty payload (a zero length is read as the end of the segment)
    or one over MAX_RECORD_BYTES (16 MiB, which `scan` would refuse to read back).
    """
    if not payload:
        raise ValueError("spool records cannot be empty")
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError(f"spool record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def frames(buf: bytes, start: int = 0) -> tuple[list[tuple[int, int]], int]:
    """(offset, end) of each valid framed record of `buf[start:]`, and the end of the last valid one.

    Zero-copy: the CRC is checked on a memoryview; a record's payload is `buf[offset + 8 : end]`.
    Stops at the first incomplete, zero-length or CRC-failing record: for an `.open` segment that
    is the torn tail; for a sealed one it is corruption (the caller compares the returned end to
    the size). Offsets are bytes from the start of the segment.
    """
    spans: list[tuple[int, int]] = []
    append = spans.append
    view = memoryview(buf)
    pos = start
    size = len(buf)
    unpack = HEADER.unpack_from
    crc32 = zlib.crc32
    while pos + HEADER.size <= size:
        length, crc = unpack(buf, pos)
        end = pos + HEADER.size + length
        if length == 0 or length > MAX_RECORD_BYTES or end > size or crc32(view[pos + HEADER.size : end]) != crc:
            break
        append((pos, end))
        pos = end
    return spans, pos


def scan(buf: bytes, segment_id: str = "", start: int = 0) -> tuple[list[Record], int]:
    """The framed records of `buf[start:]` (one `Record` per frame, payload copied) and the end of
    the last valid one; see `frames` for where it stops."""
    spans, end = frames(buf, start)
    return [Record(segment_id, pos, stop, bytes(buf[pos + HEADER.size : stop])) for pos, stop in spans], end


# -- block records ---------------------------------------------------------------------------
def position_tail(segment_id: str) -> bytes:
    """The part of every row's position suffix that is the same for a whole segment."""
    return b',"spool_segment":"' + segment_id.encode() + b'","spool_offset":'


def block_payload(segment: str | bytes, offset: int, ids: Sequence[bytes], rows: Sequence[bytes],
                  members: bytes = b"") -> bytes:
    """A block record's payload for a frame at byte `offset` of segment `segment` (its id, or the
    segment's `position_tail`, computed once per segment by a writer).

    `ids[i]` is row i's event id (36 ASCII bytes, lower case); `rows[i]` one compact JSON object
    (one line, ending with `}`). Every row gets `members` (JSON object members with a leading
    comma, e.g. the stamps of the request all rows came in) and then its position
    `"spool_segment"`, `"spool_offset": offset + i` appended. Raises ValueError for no rows,
    mismatched lengths, an id that is not 36 bytes or a row that is not a one-line JSON object.
    """
    return group_payload(segment, offset, ((ids, rows, members),))


def group_payload(segment: str | bytes, offset: int,
                  requests: Iterable[tuple[Sequence[bytes], Sequence[bytes], bytes]]) -> bytes:
    """One block record's payload holding the rows of several requests, in order: each request is
    (ids, rows, members) as in `block_payload`, its rows completed with its own `members`. Row i
    of the block (counting across requests) is at position (segment, offset + i). Same errors as
    `block_payload`, for any request."""
    tail = segment if isinstance(segment, bytes) else position_tail(segment)
    ids_out: list[bytes] = []
    body: list[bytes] = []
    append = body.append
    i = offset
    for ids, rows, members in requests:
        n = len(rows)
        if not n or len(ids) != n:
            raise ValueError(f"a block needs as many event ids as rows (ids {len(ids)}, rows {n})")
        if b"\n" in members:
            raise ValueError("members must be on one line")
        for event_id in ids:
            if len(event_id) != EVENT_ID_BYTES:
                raise ValueError(f"event id {event_id!r} is not {EVENT_ID_BYTES} bytes")
        ids_out += ids
        row_tail = members + tail
        for row in rows:
            if row[-1:] != b"}" or b"\n" in row:
                raise ValueError(f"row {i - offset} is not a one-line JSON object")
            append(row[:-1])
            append(row_tail)
            append(b"%d}\n" % i)
            i += 1
    if i == offset:
        raise ValueError("a block needs at least one row")
    return b"".join([BLOCK_HEAD.pack(BLOCK_MAGIC, i - offset), *ids_out, *body])


class Block(NamedTuple):
    """A block record, read without copying: its frame's offset and end, the number of rows, and
    where in the segment's bytes its event ids and rows lie (`[ids_start, rows_start)`,
    `[rows_start, end)`). Row i is at position (segment id, offset + i)."""

    offset: int
    end: int
    rows: int
    ids_start: int
    rows_start: int


def block_at(buf: bytes, offset: int, end: int) -> Block | None:
    """The block record framed at `buf[offset:end]`, or None when that record is not a well-formed
    block (a record of the previous format, or a block whose row count does not match)."""
    start = offset + HEADER.size
    if buf[start : start + 4] != BLOCK_MAGIC:
        return None
    _, n = BLOCK_HEAD.unpack_from(buf, start)
    rows_start = start + BLOCK_HEAD.size + n * EVENT_ID_BYTES
    if not n or rows_start >= end or buf[end - 1] != 0x0A or buf.count(b"\n", rows_start, end) != n:
        return None
    return Block(offset, end, n, start + BLOCK_HEAD.size, rows_start)


def scan_blocks(buf: bytes) -> tuple[list[tuple[int, int, int, int, int]], int]:
    """Every valid framed record of a segment's bytes as a plain tuple in `Block`'s field order
    (offset, end, rows, ids_start, rows_start; a record that is not a well-formed block, e.g. of
    the previous format, has rows = 0), and the end of the last valid record (see `frames` for
    where it stops).

    The flusher's read path: one loop, no copy, the CRC checked on a memoryview (`frames` and
    `block_at` in one pass; a frame's header and a block's head read in one `unpack`); plain
    tuples, because a NamedTuple's constructor is a Python call.
    """
    out: list[tuple[int, int, int, int, int]] = []
    append = out.append
    view = memoryview(buf)
    pos = 0
    size = len(buf)
    unpack = HEADER.unpack_from
    unpack_both = _FRAME_AND_BLOCK_HEAD.unpack_from
    crc32 = zlib.crc32
    count = buf.count
    head, block_head, magic, id_bytes = HEADER.size, BLOCK_HEAD.size, BLOCK_MAGIC, EVENT_ID_BYTES
    both = head + block_head
    while pos + head <= size:
        if pos + both <= size:
            length, crc, found, n = unpack_both(buf, pos)
        else:  # a short record at the very end: not a block
            (length, crc), found, n = unpack(buf, pos), b"", 0
        start = pos + head
        end = start + length
        if length == 0 or length > MAX_RECORD_BYTES or end > size or crc32(view[start:end]) != crc:
            break
        if found == magic and length > block_head:
            rows_start = start + block_head + n * id_bytes
            if n and rows_start < end and buf[end - 1] == 0x0A and count(b"\n", rows_start, end) == n:
                append((pos, end, n, start + block_head, rows_start))
                pos = end
                continue
        append((pos, end, 0, 0, 0))
        pos = end
    return out, pos


def records_of(segment_id: str, buf: bytes, spans: Sequence[tuple[int, int]]) -> list[Record]:
    """One `Record` per event of the framed records at `spans` of `buf`: a block gives one per row
    (payload: the row without its newline; offset B + i, end B + i + 1, the last row's end the
    frame's end), any other record itself (its payload)."""
    out: list[Record] = []
    for pos, end in spans:
        block = block_at(buf, pos, end)
        if block is None:
            out.append(Record(segment_id, pos, end, bytes(buf[pos + HEADER.size : end])))
            continue
        rows = buf[block.rows_start : end - 1].split(b"\n")
        last = len(rows) - 1
        out += [Record(segment_id, pos + i, end if i == last else pos + i + 1, row) for i, row in enumerate(rows)]
    return out


def new_segment_id(after_us: int = 0) -> str:
    """A fresh segment id `<µs since epoch, 17 digits>-<8 hex>`, later than `after_us` (µs)."""
    now_us = max(time.time_ns() // 1000, after_us + 1)
    return f"{now_us:017d}-{secrets.token_hex(4)}"


def segment_created_us(segment_id: str) -> int:
    """Creation time (µs since epoch) encoded in a segment id."""
    return int(segment_id.split("-", 1)[0])


def write_segment(directory: Path, segment_id: str, blocks: Iterable[tuple[Sequence[bytes], Sequence[bytes]]]) -> int:
    """Write `blocks` ((event ids, rows) pairs, see `block_payload`) as segment `segment_id` into a
    hidden temp file `.<segment_id>.tmp` of `directory`, fsynced; `publish_segment` seals it.
    Returns the number of rows. Raises ValueError for a malformed block (the temp file is
    removed), OSError when the disk refuses."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{segment_id}.tmp"
    rows_written = 0
    try:
        with open(tmp, "wb") as fh:
            offset = 0
            for ids, rows in blocks:
                payload = block_payload(segment_id, offset, ids, rows)
                fh.write(frame(payload))
                offset += HEADER.size + len(payload)
                rows_written += len(rows)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows_written


def publish_segment(directory: Path, segment_id: str) -> None:
    """Seal a segment written by `write_segment`: rename it to `<segment_id>.seg`, fsync the directory."""
    (directory / f".{segment_id}.tmp").rename(directory / (segment_id + SEALED_SUFFIX))
    fsync_dir(directory)


def write_sealed_segment(directory: Path, blocks: Iterable[tuple[Sequence[bytes], Sequence[bytes]]]) -> str:
    """Write `blocks` as one new sealed segment (temp file, fsync, rename, directory fsync) and
    return its id: for writers other than the collector (`clickstream import`); the flusher picks
    it up like any other. Errors as `write_segment`."""
    segment_id = new_segment_id()
    write_segment(directory, segment_id, blocks)
    publish_segment(directory, segment_id)
    return segment_id


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise SpoolLockedError(f"{path} is held by another process") from exc
    return fd


def recover(directory: Path) -> int:
    """Cut torn tails of `.open` segments left by a crash and seal them; return bytes cut.

    Must only run while holding the writer lock (no live writer appends to those files).
    """
    cut = 0
    for path in sorted(directory.glob("*" + OPEN_SUFFIX)):
        data = path.read_bytes()
        _, valid_end = frames(data)
        if valid_end < len(data):
            cut += len(data) - valid_end
            log.warning("spool: cut torn tail of %s at byte %d (%d bytes)", path.name, valid_end,
                        len(data) - valid_end)
            with open(path, "r+b") as fh:
                fh.truncate(valid_end)
                fh.flush()
                os.fsync(fh.fileno())
        if valid_end == 0:
            path.unlink()
        else:
            path.rename(path.with_suffix(SEALED_SUFFIX))
    fsync_dir(directory)
    return cut


class SpoolWriter:
    """The single appender of a spool directory (see the module docstring for the guarantees)."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_max_bytes: int = 16 * 1024 * 1024,
        segment_max_age_ms: int = 1000,
        max_bytes: int = 1024 * 1024 * 1024,
        fsync_interval_ms: int = 20,
        on_fsync: Callable[[float], None] | None = None,
    ) -> None:
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age_ms = segment_max_age_ms
        self.max_bytes = max_bytes
        self.fsync_interval_ms = fsync_interval_ms
        self._on_fsync = on_fsync
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd: int | None = None
        self._segment_id = ""
        self._tail = b""  # position_tail of the active segment
        self._offset = 0
        self._opened_at = 0.0
        self._durable = SpoolPosition("", 0)
        self._bytes_other = 0  # sealed and detached segments' bytes, refreshed by rescans
        self._detached: list[tuple[str, int, int]] = []  # (segment id, fd, size) awaiting their seal
        self._dir_synced = ""  # the last segment whose directory entry was fsynced
        self._last_id_us = 0
        self._lock_fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.torn_bytes_cut = 0

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> SpoolWriter:
        """Take the writer lock, recover torn tails, start the group-commit thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(self.directory / ".writer.lock")
        try:
            self.torn_bytes_cut = recover(self.directory)
            self._rescan()
        except BaseException:
            os.close(lock_fd)  # a failed recovery must not keep the lock (nor leak the fd)
            raise
        self._lock_fd = lock_fd
        self._closed = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._background, name="spool-fsync", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Fsync and seal the active segment, stop the background thread, release the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.seal_active()
        with self._lock:
            self._closed = True  # an append after close would write without the lock
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> SpoolWriter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------
    @property
    def bytes_used(self) -> int:
        """Bytes held by unflushed segments (active + sealed), as of the last rescan + appends."""
        return self._bytes_other + self._offset

    def over_quota(self) -> bool:
        return self.bytes_used >= self.max_bytes

    def append(self, payloads: Sequence[bytes]) -> SpoolPosition:
        """Append records to the active segment; return the position just past the last one.

        Records are durable against machine crashes once `durable_position() >= position`.
        Raises SpoolFullError over `max_bytes`; SpoolError after `close()`; ValueError for an
        empty payload; OSError (e.g. ENOSPC) after rolling the partial write back, so the segment
        never holds a half-written record from a live process.
        """
        parts: list[bytes] = []
        for payload in payloads:  # framed in one join: one copy of each payload
            if not payload or len(payload) > MAX_RECORD_BYTES:
                frame(payload)  # raises the ValueError
            parts.append(_pack_header(len(payload), zlib.crc32(payload)))
            parts.append(payload)
        data = b"".join(parts)
        with self._lock:
            self._prepare_locked(len(data))
            return self._write_locked(data)

    def append_block(self, ids: Sequence[bytes], rows: Sequence[bytes], members: bytes = b"") -> SpoolPosition:
        """Append one block record (the rows of one request, each completed with `members`, see
        `block_payload`) and return the position just past it. Row i gets the position (segment,
        block offset + i), stamped into the row here, where the offset is known.

        Same durability and errors as `append`, plus ValueError for a malformed block
        (`block_payload`).
        """
        return self.append_group(((ids, rows, members),))

    def append_group(self, requests: Sequence[tuple[Sequence[bytes], Sequence[bytes], bytes]]) -> SpoolPosition:
        """Append the rows of several requests, each (ids, rows, members) as in `append_block`, as one
        block record (`group_payload`: one frame, one CRC, one `write(2)`), and return the position
        just past it. Either every request's rows are written or none (same errors as `append_block`).
        """
        estimate = HEADER.size + BLOCK_HEAD.size
        for _, rows, members in requests:
            estimate += sum(map(len, rows)) + len(rows) * (EVENT_ID_BYTES + 72 + len(members))
        with self._lock:
            self._prepare_locked(estimate)
            payload = group_payload(self._tail, self._offset, requests)
            if len(payload) > MAX_RECORD_BYTES:
                raise ValueError(f"block of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
            return self._write_locked(_pack_header(len(payload), zlib.crc32(payload)) + payload)

    def _prepare_locked(self, size: int) -> None:
        """Check the writer is open and under quota; start a new segment when `size` more bytes
        would overflow the active one (a record larger than a segment is kept whole)."""
        if self._closed:
            raise SpoolError(f"spool writer of {self.directory} is closed")
        if self.bytes_used >= self.max_bytes:
            raise SpoolFullError(f"spool holds {self.bytes_used} bytes, quota {self.max_bytes}")
        if self._fd is not None and self._offset + size > self.segment_max_bytes and self._offset:
            self._detach_locked()
        if self._fd is None:
            self._new_segment_locked()

    def _write_locked(self, data: bytes) -> SpoolPosition:
        """`write(2)` all of `data` at the active segment's end; roll back a partial write."""
        assert self._fd is not None
        start = self._offset
        try:
            written = os.write(self._fd, data)
            if written < len(data):  # a short write (rare): the rest, then on
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(self._fd, view):]
        except OSError:
            os.ftruncate(self._fd, start)
            raise
        self._offset = start + len(data)
        return SpoolPosition(self._segment_id, self._offset)

    def durable_position(self) -> SpoolPosition:
        """Everything appended up to this position survives a machine crash (it is fsynced)."""
        return self._durable

    def written_position(self) -> SpoolPosition:
        """The end of the last append (in the page cache: survives a process crash)."""
        with self._lock:
            return SpoolPosition(self._segment_id, self._offset)

    def sync_to(self, position: SpoolPosition) -> None:
        """Block until `position` is fsynced (group commit: concurrent callers share one fsync).

        Also seals any detached segment. Raises OSError when fsync fails.
        """
        with self._sync_lock:
            while True:
                self._finish_detached()
                if self._durable >= position:
                    return
                with self._lock:
                    if self._fd is not None and self._segment_id == position.segment_id:
                        fd = os.dup(self._fd)
                        segment_id = self._segment_id
                        target = SpoolPosition(segment_id, self._offset)
                        break
                    if not any(d[0] == position.segment_id for d in self._detached):
                        return  # not written by this writer (or sealed before it): nothing to wait for
                # detached since `_finish_detached` ran: seal it on the next turn
            try:
                self._timed_fsync(fd)
            finally:
                os.close(fd)
            if self._dir_synced != segment_id:  # the new file's directory entry, once per segment
                fsync_dir(self.directory)
                self._dir_synced = segment_id
            with self._lock:  # sealing moves `_durable` too: never let it go backwards
                self._durable = max(self._durable, target)

    def seal_active(self) -> str | None:
        """Seal the active segment now (fsync, rename to `.seg`) if it holds records; return its id."""
        with self._lock:
            segment_id = self._detach_locked() if self._fd is not None else None
        with self._sync_lock:
            self._finish_detached()
        return segment_id

    def seal_if_older(self, age_ms: float) -> str | None:
        """Seal the active segment when it was opened more than `age_ms` ago; return its id."""
        with self._lock:
            if self._fd is None or (time.monotonic() - self._opened_at) * 1000 < age_ms:
                return None
            segment_id = self._detach_locked()
        with self._sync_lock:
            self._finish_detached()
        return segment_id

    # -- internals -------------------------------------------------------------------------
    def _new_segment_locked(self) -> None:
        # no directory fsync here (this runs on the event loop): `sync_to` and sealing do it
        self._segment_id = new_segment_id(self._last_id_us)
        self._tail = position_tail(self._segment_id)
        self._last_id_us = segment_created_us(self._segment_id)
        path = self.directory / (self._segment_id + OPEN_SUFFIX)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._offset = 0
        self._opened_at = time.monotonic()

    def _detach_locked(self) -> str:
        """Stop appending to the active segment (no I/O); `_finish_detached` seals it."""
        assert self._fd is not None
        segment_id = self._segment_id
        self._detached.append((segment_id, self._fd, self._offset))
        self._bytes_other += self._offset
        self._fd = None
        self._offset = 0
        self._segment_id = ""
        return segment_id

    def _finish_detached(self) -> None:
        """Fsync, close and rename detached segments to `.seg`, in order (caller holds `_sync_lock`)."""
        with self._lock:
            detached, self._detached = self._detached, []
        if not detached:
            return
        try:
            for segment_id, fd, _ in detached:
                try:
                    self._timed_fsync(fd)
                finally:
                    os.close(fd)
                path = self.directory / (segment_id + OPEN_SUFFIX)
                path.rename(path.with_suffix(SEALED_SUFFIX))
            fsync_dir(self.directory)
        except OSError:
            log.exception("spool: sealing failed; the segments stay .open and are sealed at the next start")
            raise
        segment_id, _, size = detached[-1]
        with self._lock:
            self._durable = max(self._durable, SpoolPosition(segment_id, size))

    def _timed_fsync(self, fd: int) -> None:
        started = time.perf_counter()
        os.fsync(fd)
        if self._on_fsync is not None:
            self._on_fsync(time.perf_counter() - started)

    def _rescan(self) -> None:
        """Recount sealed bytes from disk (the flusher deletes segments) plus detached ones."""
        total = 0
        for path in self.directory.glob("*" + SEALED_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        with self._lock:
            self._bytes_other = total + sum(size for _, _, size in self._detached)

    def _background(self) -> None:
        interval_s = self.fsync_interval_ms / 1000 if self.fsync_interval_ms > 0 else 0.05
        last_rescan = 0.0
        while not self._stop.wait(interval_s):
            try:
                if self.fsync_interval_ms > 0:
                    self.sync_to(self.written_position())  # seals detached segments first
                else:
                    with self._sync_lock:
                        self._finish_detached()
                self.seal_if_older(self.segment_max_age_ms)
                now = time.monotonic()
                if now - last_rescan >= 0.5:
                    self._rescan()  # globs without the append lock: the event loop goes on
                    last_rescan = now
            except Exception:  # keep the group commit alive; the failure is logged, not hidden
                log.exception("spool background step failed")


class SpoolReader:
    """The flusher's view of a spool: sealed segments, their records, and marking them done."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def sealed_segments(self) -> list[SegmentInfo]:
        """Sealed segments, oldest first."""
        out = []
        for path in sorted(self.directory.glob("*" + SEALED_SUFFIX)):
            with contextlib.suppress(FileNotFoundError):
                out.append(SegmentInfo(path.stem, path, path.stat().st_size))
        return out

    def open_segments(self) -> list[SegmentInfo]:
        """Active (not yet sealed) segments: their complete records may be read, not marked done."""
        out = []
        for path in sorted(self.directory.glob("*" + OPEN_SUFFIX)):
            with contextlib.suppress(FileNotFoundError):
                out.append(SegmentInfo(path.stem, path, path.stat().st_size))
        return out

    def records(self, segment: SegmentInfo) -> list[Record]:
        """Every event of a segment in order, one `Record` each (block records are read row by row,
        see `records_of`). Raises CorruptSegmentError (with the good prefix readable again by
        `frames`) when a sealed segment's framing breaks before its end."""
        data = segment.path.read_bytes()
        spans, end = frames(data)
        if end != len(data) and segment.path.suffix == SEALED_SUFFIX:
            raise CorruptSegmentError(segment.segment_id, end)
        return records_of(segment.segment_id, data, spans)

    def iter_all(self) -> Iterator[Record]:
        """Events of sealed then open segments (complete records only), oldest first.

        Of a corrupt sealed segment, the events of the intact records before the break are yielded.
        """
        for listing in (self.sealed_segments, self.open_segments):
            for seg in listing():
                try:
                    data = seg.path.read_bytes()
                except FileNotFoundError:  # marked done, or sealed since it was listed
                    try:
                        data = seg.path.with_suffix(SEALED_SUFFIX).read_bytes()
                    except FileNotFoundError:
                        continue
                yield from records_of(seg.segment_id, data, frames(data)[0])

    def mark_done(self, segment_id: str) -> None:
        """Delete a sealed segment whose every record ClickHouse confirmed (or dead-lettered)."""
        (self.directory / (segment_id + SEALED_SUFFIX)).unlink(missing_ok=True)
        fsync_dir(self.directory)

    def quarantine(self, segment_id: str) -> Path:
        """Move a corrupt sealed segment to `corrupt/` and return its new path."""
        target_dir = self.directory / "corrupt"
        target_dir.mkdir(exist_ok=True)
        target = target_dir / (segment_id + SEALED_SUFFIX)
        (self.directory / (segment_id + SEALED_SUFFIX)).rename(target)
        return target

    def lock_for_flusher(self) -> int:
        """Take the exclusive flusher lock (one flusher per spool); returns the fd to keep open."""
        return _lock(self.directory / ".flusher.lock")
