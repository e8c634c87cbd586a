"""`clickstream import FILE`: historical events through the collector's validation into the spool.

Input (`--format jsonl`, the default): each line is one event (the JSON Schema of POST /collect), or
an envelope `{"event": {...}, "user_agent": "...", "received_at": ms}` that keeps what a collector
would have stamped. `--format ga4`: rows of a GA4 BigQuery export (collector.ga4 documents the
mapping). The file may be gzip- or zstd-compressed (recognised by its magic bytes).

Lines go through the same validation as `/collect` (every accepted schema version, upcast to
the current one, and the custom event schemas: collector.schemas) but not the 72 h
clock policy: history is what import is for. Still refused: timestamps before 2000-01-01
(`ts_too_old`) or more than `max_clock_skew_s` ahead of now (`ts_in_future`), the range `events`
accepts; events without ids (`"consent": "pending"`, `consent_pending`), whose ids only a browser's
request can give. Every refused line is kept in `<data-dir>/rejected/` with its reason and line
number, in file order.

Speed: the file is cut into chunks of whole lines (`chunk_bytes` of input each); a process pool
(one worker per core; inline on one core) validates each chunk and writes it as one spool segment
of block records (clickstream.core.spool) into a hidden temp file; the main process seals them in
file order (rename, directory fsync), so segment ids, spool positions and rejections follow the
file. A running flusher picks the segments up as they are sealed: `clickstream import --flush`
streams into ClickHouse while reading (the CLI runs a flusher beside the import); otherwise a
running `serve` or `flusher`, or the next one, does. On a terminal, a progress bar shows bytes
read, events/s and the time left.

`event_id` defaults to a UUID v5 of the line's bytes, so importing the same file twice stores each
event once (the flusher drops repeated event ids it still remembers; see flusher.dedup).
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import multiprocessing
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from clickstream.core.settings import Settings
from clickstream.core.spool import new_segment_id, publish_segment, segment_created_us, write_segment
from clickstream.core.times import MIN_TS_MS, parse_ts
from clickstream.core.useragent import agent_fragment
from collector import ga4
from collector.pipeline import ingest_row
from collector.rejected import RejectedStore
from collector.schemas import EventSchemas, SchemaVersion
from collector.validation import RejectReason

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

IMPORT_NAMESPACE = uuid.UUID("6f1c7f8e-3b7a-4c1e-9a53-1f2d3c4b5a69")
DEFAULT_USER_AGENT = "Mozilla/5.0 (compatible; clickstream-import)"
FORMATS = ("jsonl", "ga4")
#: Input bytes per chunk: one spool segment each (~50-80 k events of 200-300 bytes), so the flusher
#: inserts big batches (ClickHouse's advice: large, infrequent inserts).
CHUNK_BYTES = 16 * 1024 * 1024
#: Rows per block record inside an import segment (a block stays well under the 16 MiB record bound).
BLOCK_ROWS = 2000

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BZ2_MAGIC = b"BZh"


@dataclasses.dataclass(frozen=True)
class ImportOptions:
    """How lines are read: format, default User-Agent, GA4 site id, clock bound (epoch ms), custom
    event schemas (collector.schemas)."""

    fmt: str = "jsonl"
    user_agent: str = DEFAULT_USER_AGENT
    site_id: str | None = None
    received_at_ms: int = 0
    max_ts_ms: int = 0
    custom_schemas_path: Path | None = None


@dataclasses.dataclass
class ImportResult:
    """What an import did: accepted events, rejections by reason, segments written, bytes read, time."""

    accepted: int = 0
    rejected: Counter[str] = dataclasses.field(default_factory=Counter)
    segments: list[str] = dataclasses.field(default_factory=list)
    lines: int = 0
    bytes_read: int = 0
    elapsed_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        rate = round(self.accepted / self.elapsed_s) if self.elapsed_s else 0
        return {"accepted": self.accepted, "rejected": dict(self.rejected), "segments": len(self.segments),
                "lines": self.lines, "bytes": self.bytes_read, "seconds": round(self.elapsed_s, 2),
                "events_per_s": rate}


@dataclasses.dataclass
class _Chunk:
    """A worker's answer for one chunk: its segment (written, not yet sealed) and its rejections."""

    segment_id: str
    lines: int
    accepted: int
    rejected: list[dict[str, Any]]


# -- input ---------------------------------------------------------------------------------------
class Readable(Protocol):
    """What `chunks` reads from: a (decompressing) binary stream."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def open_input(path: Path) -> tuple[IO[bytes], Readable]:
    """(raw file, decompressed stream) of `path`: gzip, zstd and bzip2 are recognised by their magic
    bytes, anything else is read as is. The raw file's position is the progress in bytes."""
    raw = open(path, "rb")  # noqa: SIM115 (the caller closes it)
    magic = raw.read(4)
    raw.seek(0)
    if magic.startswith(_GZIP_MAGIC):
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(_ZSTD_MAGIC):
        return raw, zstd.ZstdFile(raw, mode="rb")
    if magic.startswith(_BZ2_MAGIC):
        return raw, bz2.BZ2File(raw, mode="rb")
    return raw, raw


def chunks(stream: Readable, size: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """(number of its first line, bytes of whole lines) of about `size` bytes each, in order; the
    last line may lack its newline."""
    carry = b""
    line = 1
    while True:
        data = stream.read(size)
        if not data:
            if carry:
                yield line, carry
            return
        data = carry + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            carry = data
            continue
        piece, carry = data[:cut], data[cut:]
        yield line, piece
        line += piece.count(b"\n")


# -- one chunk (runs in a worker process) ---------------------------------------------------------
_schemas: EventSchemas | None = None


def import_event_id(line: bytes) -> str:
    """The event id of a line without one: `uuid.uuid5(IMPORT_NAMESPACE, line)` (the line as UTF-8),
    computed with hashlib directly (3x cheaper than through uuid.UUID)."""
    digest = bytearray(hashlib.sha1(IMPORT_NAMESPACE.bytes + line, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5 (RFC 9562 section 5.5)
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _reject(out: list[dict[str, Any]], number: int, reason: RejectReason, path: str, message: str,
            event: Any) -> None:
    out.append({"reason": reason.value, "index": number, "path": path, "message": f"line {number}: {message}",
                "event": event})


def _candidates(first_line: int, data: bytes, options: ImportOptions, rejected: list[dict[str, Any]]
                ) -> list[tuple[int, bytes, dict[str, Any], bytes, bool]]:
    """Decode and map each line: (line number, line, event, stamp, whether the event is the whole
    line). The stamp is `received_at` and the User-Agent members (collector.pipeline's shape)."""
    out: list[tuple[int, bytes, dict[str, Any], bytes, bool]] = []
    plain_stamp = b',"received_at":%d,' % options.received_at_ms + agent_fragment(options.user_agent)
    for i, raw_line in enumerate(data.split(b"\n")):
        line = raw_line.strip()
        if not line:
            continue
        number = first_line + i
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            _reject(rejected, number, RejectReason.MALFORMED_JSON, "", f"malformed JSON: {exc}",
                    line.decode("utf-8", "replace"))
            continue
        if options.fmt == "ga4":
            try:
                event, agent = ga4.to_event(value, options.site_id)
            except (ga4.Unmappable, TypeError, ValueError) as exc:
                _reject(rejected, number, RejectReason.SCHEMA_VIOLATION, getattr(exc, "path", ""),
                        f"GA4 row does not map to an event: {exc}", value)
                continue
            out.append((number, line, event, b',"received_at":%d,' % options.received_at_ms + agent, False))
        elif isinstance(value, dict) and isinstance(value.get("event"), dict):  # an envelope
            received_at = value["received_at"] if isinstance(value.get("received_at"), int) else options.received_at_ms
            agent = agent_fragment(str(value.get("user_agent", options.user_agent)))
            out.append((number, line, value["event"], b',"received_at":%d,' % received_at + agent, False))
        else:
            out.append((number, line, value, plain_stamp, True))
    return out


def _rows(first_line: int, data: bytes, options: ImportOptions, rejected: list[dict[str, Any]]
          ) -> tuple[list[bytes], list[bytes]]:
    """Validate the lines of `data` and stamp the valid ones: (event ids, `events_ingest` rows).

    A valid event that is a whole line with an integer `ts` keeps the line's own bytes (no
    re-encoding; an absent event id is added as a member). A line with a repeated key, which a
    JSON parser reads as its last value, is then refused by ClickHouse and dead-lettered by the
    flusher with the error (reason `clickhouse_rejected`), not stored differently.
    """
    schemas = _schemas or EventSchemas.from_settings(options.custom_schemas_path)
    candidates = _candidates(first_line, data, options, rejected)
    all_valid = bool(candidates) and schemas.all_valid([c[2] for c in candidates])
    ids: list[bytes] = []
    rows: list[bytes] = []
    dumps = orjson.dumps
    for number, line, event, stamp, whole in candidates:
        checked = check_history(event, schemas, options.max_ts_ms, all_valid)
        if isinstance(checked, Refusal):
            _reject(rejected, number, checked.reason, checked.path, checked.message, event)
            continue
        version, ts_ms = checked
        ts = event["ts"]
        event_id = event.get("event_id")
        if whole and ts_ms is ts and "schema" not in event and not version.upcasts:  # the line as written
            if event_id is None:
                event_id = import_event_id(line)
                stamp = b',"event_id":"' + event_id.encode() + b'"' + stamp
            rows.append(ingest_row(line, stamp))
        else:
            event["ts"] = ts_ms
            version.upcast(event)  # the current shape, `schema` removed (collector.schemas)
            if event_id is None:
                event_id = event["event_id"] = import_event_id(line)
            rows.append(ingest_row(dumps(event), stamp))
        ids.append(event_id.lower().encode())
    return ids, rows


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why history (an imported line, a replayed dead letter) is refused: reason, JSON Pointer, message."""

    reason: RejectReason
    path: str
    message: str


def check_history(event: Any, schemas: EventSchemas, max_ts_ms: int, valid: bool = False
                  ) -> Refusal | tuple[SchemaVersion, int]:
    """The rules of history (import, replay of rejected events): the event's schema version and custom
    schema (`valid`: it passed its version already), a real timestamp from 2000-01-01
    (`ts_too_old` before) to `max_ts_ms` (`ts_in_future` after), and ids (no `consent`). Returns
    (its SchemaVersion, `ts` in epoch ms; the very `ts` object when it is integer ms), or the Refusal.
    Does not change the event."""
    version = schemas.check(event, valid)
    if isinstance(version, tuple):
        path, message, reason = version
        return Refusal(reason, path, message)
    ts = event["ts"]
    try:
        ts_ms = ts if type(ts) is int else parse_ts(ts)
    except ValueError as exc:
        return Refusal(RejectReason.INVALID_TIMESTAMP, "/ts", str(exc))
    if ts_ms < MIN_TS_MS:
        return Refusal(RejectReason.TS_TOO_OLD, "/ts", "ts before 2000-01-01")
    if ts_ms > max_ts_ms:
        return Refusal(RejectReason.TS_IN_FUTURE, "/ts", "ts in the future")
    if "consent" in event:  # ids derived from the browser's IP and User-Agent: only POST /collect has them
        return Refusal(RejectReason.CONSENT_PENDING, "/consent", "events without ids (consent pending) cannot be "
                       "imported: give them anonymous_id and session_id")
    return version, ts_ms


def import_chunk(spool: Path, segment_id: str, first_line: int, data: bytes, options: ImportOptions) -> _Chunk:
    """Validate one chunk and write its accepted events as segment `segment_id` (a temp file until
    the main process publishes it). Runs in a worker process."""
    rejected: list[dict[str, Any]] = []
    ids, rows = _rows(first_line, data, options, rejected)
    if rows:
        write_segment(spool, segment_id, ((ids[i : i + BLOCK_ROWS], rows[i : i + BLOCK_ROWS])
                                          for i in range(0, len(rows), BLOCK_ROWS)))
    rejected.sort(key=lambda entry: int(entry["index"]))  # decode and validation errors, in line order
    return _Chunk(segment_id, data.count(b"\n") + (not data.endswith(b"\n")), len(rows), rejected)


def _init_worker(custom_schemas_path: Path | None = None) -> None:
    global _schemas
    _schemas = EventSchemas.from_settings(custom_schemas_path)


class _Inline(Executor):
    """The pool's interface, run in this process (one core, or one worker asked for)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered through the future, as a pool would
            future.set_exception(exc)
        return future


# -- the whole file ------------------------------------------------------------------------------
def import_file(settings: Settings, path: Path, *, user_agent: str = DEFAULT_USER_AGENT, fmt: str = "jsonl",
                site_id: str | None = None, workers: int | None = None, chunk_bytes: int = CHUNK_BYTES,
                progress: bool | None = None) -> ImportResult:
    """Validate and spool every event of `path` (see the module docstring).

    `workers`: validating processes (default: one per core, or inline for a file under a quarter
    chunk (compressed size), where starting a pool costs more than it saves); `progress`: show a
    progress bar (default: when stderr is a terminal). Raises OSError when the file cannot be read
    (segments already sealed stay, and their events are flushed), ValueError for an unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown import format {fmt!r}; one of {', '.join(FORMATS)}")
    started = time.perf_counter()
    now_ms = int(time.time() * 1000)
    options = ImportOptions(fmt, user_agent, site_id, now_ms, now_ms + settings.max_clock_skew_s * 1000,
                            settings.custom_schemas_path)
    spool = settings.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    rejected = RejectedStore(settings.rejected_dir, max_bytes=settings.rejected_max_bytes,
                             file_max_bytes=settings.rejected_file_max_bytes)
    raw, stream = open_input(path)
    total = os.fstat(raw.fileno()).st_size
    if workers is None:  # a pool takes ~1 s to start: not worth it for one chunk
        workers = (os.cpu_count() or 1) if total > chunk_bytes // 4 else 1
    if workers == 1:
        _init_worker(settings.custom_schemas_path)
    pool: Executor = (_Inline() if workers == 1 else ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
        initargs=(settings.custom_schemas_path,)))
    result = ImportResult()
    bar = _Progress(total, progress if progress is not None else sys.stderr.isatty())
    pending: list[Future[_Chunk]] = []
    last_us = 0
    try:
        with bar:
            for first_line, data in chunks(stream, chunk_bytes):
                segment_id = new_segment_id(last_us)  # ids in file order: positions follow the file
                last_us = segment_created_us(segment_id)
                pending.append(pool.submit(import_chunk, spool, segment_id, first_line, data, options))
                while len(pending) > workers + 1 or (pending and pending[0].done()):
                    _seal(pending.pop(0).result(), spool, rejected, result, path)
                    bar.update(raw.tell(), result.accepted)
            while pending:
                _seal(pending.pop(0).result(), spool, rejected, result, path)
                bar.update(raw.tell(), result.accepted)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        for leftover in spool.glob(".*.tmp"):  # chunks written but never sealed (an error above)
            leftover.unlink(missing_ok=True)
        stream.close()
        raw.close()
        rejected.close()
    result.bytes_read = total
    result.elapsed_s = time.perf_counter() - started
    return result


def _seal(chunk: _Chunk, spool: Path, rejected: RejectedStore, result: ImportResult, source: Path) -> None:
    """Publish a chunk's segment and keep its rejections, in file order."""
    if chunk.accepted:
        publish_segment(spool, chunk.segment_id)
        result.segments.append(chunk.segment_id)
    for entry in chunk.rejected:
        entry["source"] = str(source)
        result.rejected[entry["reason"]] += 1
    if chunk.rejected:
        rejected.add(chunk.rejected)
    result.accepted += chunk.accepted
    result.lines += chunk.lines


class _Progress:
    """A rich progress bar on stderr (bytes read, events, events/s, time left), or nothing."""

    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("import"), BarColumn(), DownloadColumn(),
                                 TextColumn("{task.fields[events]:,} events, {task.fields[rate]:,} events/s"),
                                 TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
            self._task = self._bar.add_task("import", total=total_bytes, events=0, rate=0)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.stop()

    def update(self, done_bytes: int, events: int) -> None:
        if self.enabled:
            rate = round(events / max(time.perf_counter() - self.started, 1e-6))
            self._bar.update(self._task, completed=done_bytes, events=events, rate=rate)
