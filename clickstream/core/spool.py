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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from clickstream.core.files import fsync_dir

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
_pack_header = HEADER.pack
MAX_RECORD_BYTES = 16 * 1024 * 1024
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


@dataclasses.dataclass(frozen=True, order=True, slots=True)
class SpoolPosition:
    """A byte position in the spool: segment ids order segments, offsets order records within one."""

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


def scan(buf: bytes | memoryview, segment_id: str = "", start: int = 0) -> tuple[list[Record], int]:
    """Parse framed records from `buf[start:]` and return them with the end of the last valid one.

    Stops at the first incomplete, zero-length or CRC-failing record: for an `.open` segment that
    is the torn tail; for a sealed one it is corruption (the caller compares the returned end to
    the size). Offsets are bytes from the start of the segment.
    """
    records: list[Record] = []
    pos = start
    size = len(buf)
    unpack = HEADER.unpack_from
    while pos + HEADER.size <= size:
        length, crc = unpack(buf, pos)
        end = pos + HEADER.size + length
        if length == 0 or length > MAX_RECORD_BYTES or end > size:
            break
        payload = bytes(buf[pos + HEADER.size : end])
        if zlib.crc32(payload) != crc:
            break
        records.append(Record(segment_id, pos, end, payload))
        pos = end
    return records, pos


def new_segment_id(after_us: int = 0) -> str:
    """A fresh segment id `<µs since epoch, 17 digits>-<8 hex>`, later than `after_us` (µs)."""
    now_us = max(time.time_ns() // 1000, after_us + 1)
    return f"{now_us:017d}-{secrets.token_hex(4)}"


def segment_created_us(segment_id: str) -> int:
    """Creation time (µs since epoch) encoded in a segment id."""
    return int(segment_id.split("-", 1)[0])


def write_sealed_segment(directory: Path, payloads: Sequence[bytes]) -> str:
    """Write `payloads` as one new sealed segment (temp file, fsync, rename, directory fsync).

    For writers other than the collector (`clickstream import`): the flusher picks the segment up
    like any other. Returns the segment id. Raises ValueError for an empty or oversized payload,
    OSError when the disk refuses.
    """
    directory.mkdir(parents=True, exist_ok=True)
    segment_id = new_segment_id()
    tmp = directory / f".{segment_id}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(b"".join(frame(p) for p in payloads))
        fh.flush()
        os.fsync(fh.fileno())
    tmp.rename(directory / (segment_id + SEALED_SUFFIX))
    fsync_dir(directory)
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
        _, valid_end = scan(data, path.stem)
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
            if self._closed:
                raise SpoolError(f"spool writer of {self.directory} is closed")
            if self.bytes_used >= self.max_bytes:
                raise SpoolFullError(f"spool holds {self.bytes_used} bytes, quota {self.max_bytes}")
            if self._fd is not None and self._offset + len(data) > self.segment_max_bytes and self._offset:
                self._detach_locked()
            if self._fd is None:
                self._new_segment_locked()
            assert self._fd is not None
            start = self._offset
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
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
        """Every record of a segment in order. Raises CorruptSegmentError (with the good prefix
        readable again by `scan`) when a sealed segment's framing breaks before its end."""
        data = segment.path.read_bytes()
        records, end = scan(data, segment.segment_id)
        if end != len(data) and segment.path.suffix == SEALED_SUFFIX:
            raise CorruptSegmentError(segment.segment_id, end)
        return records

    def iter_all(self) -> Iterator[Record]:
        """Records of sealed then open segments (complete records only), oldest first.

        Of a corrupt sealed segment, the intact records before the break are yielded.
        """
        for seg in self.sealed_segments():
            try:
                data = seg.path.read_bytes()
            except FileNotFoundError:  # marked done meanwhile
                continue
            yield from scan(data, seg.segment_id)[0]
        for seg in self.open_segments():
            with contextlib.suppress(FileNotFoundError):
                yield from scan(seg.path.read_bytes(), seg.segment_id)[0]

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
