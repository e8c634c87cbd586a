"""Durable local spool: append-only segment files of length + CRC32 framed records.

Layout of `<data-dir>/spool/`:
- `<segment_id>.open`: the active segment, appended by one writer (an exclusive `flock` on
  `.writer.lock` keeps a second writer out);
- `<segment_id>.seg`: sealed segments (by size `segment_max_bytes` or age `segment_max_age_ms`),
  immutable, read by the flusher and deleted by `SpoolReader.mark_done` once ClickHouse confirmed;
- `corrupt/`: sealed segments whose framing broke mid-file (disk damage), kept for inspection.

Record framing: `<u32 little-endian payload length><u32 CRC32 (zlib) of payload><payload>`.
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

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
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


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One framed record: its payload and where it starts and ends in its segment (bytes)."""

    segment_id: str
    offset: int
    end: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentInfo:
    segment_id: str
    path: Path
    size_bytes: int


def frame(payload: bytes) -> bytes:
    """One record's bytes on disk: header (length, CRC32) + payload."""
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def scan(buf: bytes | memoryview, segment_id: str = "", start: int = 0) -> tuple[list[Record], int]:
    """Parse framed records from `buf[start:]` and return them with the end of the last valid one.

    Stops at the first incomplete or CRC-failing record: for an `.open` segment that is the torn
    tail; for a sealed one it is corruption (the caller compares the returned end to the size).
    """
    records: list[Record] = []
    pos = start
    size = len(buf)
    unpack = HEADER.unpack_from
    while pos + HEADER.size <= size:
        length, crc = unpack(buf, pos)
        end = pos + HEADER.size + length
        if length > MAX_RECORD_BYTES or end > size:
            break
        payload = bytes(buf[pos + HEADER.size : end])
        if zlib.crc32(payload) != crc:
            break
        records.append(Record(segment_id, pos, end, payload))
        pos = end
    return records, pos


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    _fsync_dir(directory)
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
        self._bytes_other = 0  # sealed segments' bytes, refreshed by rescans
        self._last_id_us = 0
        self._lock_fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.torn_bytes_cut = 0

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> SpoolWriter:
        """Take the writer lock, recover torn tails, start the group-commit thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.directory / ".writer.lock")
        self.torn_bytes_cut = recover(self.directory)
        self._rescan()
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
        Raises SpoolFullError over `max_bytes`; OSError (e.g. ENOSPC) after rolling the partial
        write back, so the segment never holds a half-written record from a live process.
        """
        data = b"".join([frame(p) for p in payloads])
        with self._lock:
            if self.bytes_used >= self.max_bytes:
                raise SpoolFullError(f"spool holds {self.bytes_used} bytes, quota {self.max_bytes}")
            if self._fd is not None and self._offset + len(data) > self.segment_max_bytes and self._offset:
                self._seal_locked()
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
        return self._durable

    def written_position(self) -> SpoolPosition:
        with self._lock:
            return SpoolPosition(self._segment_id, self._offset)

    def sync_to(self, position: SpoolPosition) -> None:
        """Block until `position` is fsynced (group commit: concurrent callers share one fsync)."""
        with self._sync_lock:
            if self._durable >= position:
                return
            with self._lock:
                if self._fd is None or self._segment_id != position.segment_id:
                    return  # sealed since: sealing fsyncs, and `_durable` moved past it
                fd = os.dup(self._fd)
                target = SpoolPosition(self._segment_id, self._offset)
            try:
                started = time.perf_counter()
                os.fsync(fd)
                if self._on_fsync is not None:
                    self._on_fsync(time.perf_counter() - started)
            finally:
                os.close(fd)
            self._durable = max(self._durable, target)

    def seal_active(self) -> str | None:
        """Seal the active segment now if it holds records; return its id."""
        with self._lock:
            if self._fd is None:
                return None
            return self._seal_locked()

    def seal_if_older(self, age_ms: float) -> str | None:
        """Seal the active segment when it was opened more than `age_ms` ago."""
        with self._lock:
            if self._fd is None or (time.monotonic() - self._opened_at) * 1000 < age_ms:
                return None
            return self._seal_locked()

    # -- internals -------------------------------------------------------------------------
    def _new_segment_locked(self) -> None:
        now_us = max(time.time_ns() // 1000, self._last_id_us + 1)
        self._last_id_us = now_us
        self._segment_id = f"{now_us:017d}-{secrets.token_hex(4)}"
        path = self.directory / (self._segment_id + OPEN_SUFFIX)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        _fsync_dir(self.directory)
        self._offset = 0
        self._opened_at = time.monotonic()

    def _seal_locked(self) -> str:
        assert self._fd is not None
        segment_id = self._segment_id
        started = time.perf_counter()
        os.fsync(self._fd)
        if self._on_fsync is not None:
            self._on_fsync(time.perf_counter() - started)
        os.close(self._fd)
        self._fd = None
        path = self.directory / (segment_id + OPEN_SUFFIX)
        path.rename(path.with_suffix(SEALED_SUFFIX))
        _fsync_dir(self.directory)
        self._durable = max(self._durable, SpoolPosition(segment_id, self._offset))
        self._bytes_other += self._offset
        self._offset = 0
        self._segment_id = ""
        return segment_id

    def _rescan(self) -> None:
        total = 0
        for path in self.directory.glob("*" + SEALED_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        self._bytes_other = total

    def _background(self) -> None:
        interval_s = self.fsync_interval_ms / 1000 if self.fsync_interval_ms > 0 else 0.05
        last_rescan = 0.0
        while not self._stop.wait(interval_s):
            try:
                if self.fsync_interval_ms > 0:
                    self.sync_to(self.written_position())
                self.seal_if_older(self.segment_max_age_ms)
                now = time.monotonic()
                if now - last_rescan >= 0.5:
                    with self._lock:
                        self._rescan()
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
        """Records of sealed then open segments (complete records only), oldest first."""
        for seg in self.sealed_segments():
            with contextlib.suppress(CorruptSegmentError, FileNotFoundError):
                yield from self.records(seg)
        for seg in self.open_segments():
            with contextlib.suppress(FileNotFoundError):
                yield from scan(seg.path.read_bytes(), seg.segment_id)[0]

    def mark_done(self, segment_id: str) -> None:
        """Delete a sealed segment whose every record ClickHouse confirmed (or dead-lettered)."""
        (self.directory / (segment_id + SEALED_SUFFIX)).unlink(missing_ok=True)
        _fsync_dir(self.directory)

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
