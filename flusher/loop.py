"""The flusher: sealed spool segments -> ClickHouse `events`, exactly once.

Rows go to `events_ingest` (sql/0007_ingest.sql), whose materialized view enriches them into
`events`. Block records (clickstream.core.spool) already hold those rows, with the spool position
and the User-Agent fields, so the flusher checks each record's CRC and sends byte ranges of the
segment file; records of the previous format are completed row by row (flusher.legacy), so a
spool written before an upgrade drains.

Exactly once (docs/architecture.md "Exactly once"): a segment is cut into batches of whole frames
from offset 0, each closed once it holds `flush_max_rows` rows, so the batches of a sealed segment
are the same on every run; each is inserted with `insert_deduplication_token =
"<segment>:<first frame's offset>-<last frame's end>"` and the segment is deleted only after
ClickHouse confirmed every batch. A crash between insert and delete re-inserts the same ranges
with the same tokens, which ClickHouse drops (the window is set on `events` and on every
materialized-view target).

Failures: a transient error (connection, timeout, too many parts: any error that is
not a data error) is retried with capped, jittered exponential backoff (tenacity) while the
spool keeps the data; a data error (clickstream.core.clickhouse.DATA_ERROR_CODES) splits the batch
into rows and halves it until the offending rows are alone, and those go to `dead_letters` with
the error. Nothing is skipped without a counted reason (`clickstream_flusher_dead_letters_total{reason}`).

Client retries: a record whose event_id the flusher already flushed from another spool position
is dropped and counted as `clickstream_flusher_duplicates_total` (flusher.dedup.EventIdMemory:
what is remembered, why it is exact across restarts; shared by the flushers of every spool of a
process in `serve --workers`). The same record at the same position (a re-flush after a crash)
is not a duplicate: the dedup token takes care of it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import BaseRoute
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_any,
    stop_when_event_set,
    wait_random_exponential,
)

from clickstream.core.clickhouse import ClickHouseSink, Sink, error_code, is_data_error, ping_check
from clickstream.core.component import Check
from clickstream.core.settings import Settings
from clickstream.core.spool import (
    EVENT_ID_BYTES,
    HEADER,
    Block,
    Record,
    SegmentInfo,
    SpoolReader,
    SpoolWriter,
    position_tail,
    scan_blocks,
)
from clickstream.core.times import ch_datetime
from flusher import legacy
from flusher.dedup import EventIdMemory
from flusher.pacing import FlushPacer

log = logging.getLogger(__name__)

#: A failing insert is logged on its first retry and every this many after (retried until it succeeds
#: or is a data error: clickstream.core.clickhouse.is_data_error).
RETRY_LOG_EVERY = 20


@functools.lru_cache(maxsize=256)
def _ids_struct(n: int) -> struct.Struct:
    """The layout of a block's index of `n` event ids (clickstream.core.spool: 36 bytes each)."""
    return struct.Struct(f"{EVENT_ID_BYTES}s" * n)


class FlusherMetrics:
    """Rows flushed, batches, retries, dead letters by reason, duplicates, flush lag."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.rows = Counter("clickstream_flusher_rows", "Rows confirmed by ClickHouse into events", registry=r)
        self.batches = Counter("clickstream_flusher_batches", "Batches inserted", registry=r)
        self.retries = Counter("clickstream_flusher_retries", "Insert attempts retried after a transient error",
                               registry=r)
        self.dead_letters = Counter("clickstream_flusher_dead_letters", "Records written to dead_letters",
                                    ["reason"], registry=r)
        self.duplicates = Counter("clickstream_flusher_duplicates",
                                  "Records dropped because their event_id was already flushed from another "
                                  "spool position (client retry)", registry=r)
        self.segments = Counter("clickstream_flusher_segments", "Spool segments flushed and deleted", registry=r)
        self.corrupt = Counter("clickstream_flusher_corrupt_segments",
                               "Sealed segments with broken framing moved to spool/corrupt/", registry=r)
        self.lag = Gauge("clickstream_flusher_lag_seconds",
                         "Age of the oldest unflushed spool segment (its first record)", registry=r)
        self.insert_seconds = Histogram("clickstream_flusher_insert_seconds", "ClickHouse insert latency",
                                        registry=r)


class _Batch:
    """Consecutive spool frames inserted together: the rows to send as byte ranges, with each
    range's positions. `parts[i]` holds whole rows (each ending in a newline) from position
    `firsts[i]` on, the last of them ending at `ends[i]`; `rows` counts them."""

    __slots__ = ("ends", "firsts", "legacy", "parts", "rows", "start", "stop")

    def __init__(self, start: int) -> None:
        self.start = start  # offset of the batch's first frame: with `stop`, its dedup token
        self.stop = start
        self.legacy = False  # holds records of the previous format (flusher.legacy)
        self.parts: list[bytes | memoryview] = []
        self.firsts: list[int] = []
        self.ends: list[int] = []
        self.rows = 0

    def add(self, part: bytes | memoryview, first: int, end: int, rows: int) -> None:
        self.parts.append(part)
        self.firsts.append(first)
        self.ends.append(end)
        self.rows += rows


@dataclasses.dataclass
class _Prepared:
    """A segment read and cut into batches, not yet sent."""

    segment: SegmentInfo
    batches: list[_Batch] = dataclasses.field(default_factory=list)
    undecodable: list[tuple[Record, str]] = dataclasses.field(default_factory=list)
    duplicates: int = 0
    corrupt_at: int | None = None
    missing: bool = False


class Flusher:
    """Moves the sealed segments of one spool directory (`settings.spool_dir`) into ClickHouse; a
    `web.create_app` component in `serve`.

    No state is global: several flushers (one per spool) can run in one process. `memory` is the
    client-retry memory; pass one `EventIdMemory` to all of them (loaded once by the caller) so a
    retry that reached another spool is caught; by default each flusher has its own, loaded from
    ClickHouse. `writer`: the same process's spool writer, sealed by the flusher's interval.
    """

    def __init__(
        self,
        settings: Settings,
        client: Client | None,
        *,
        sink: Sink | None = None,
        writer: SpoolWriter | None = None,
        metrics: FlusherMetrics | None = None,
        memory: EventIdMemory | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        if sink is None:
            if client is None:
                raise ValueError("Flusher needs a ClickHouse client or a sink")
            sink = ClickHouseSink(client)
        self.sink = sink
        self.writer = writer
        self.reader = SpoolReader(settings.spool_dir)
        self.metrics = metrics or FlusherMetrics()
        self.max_rows = settings.flush_max_rows
        self._lock = threading.Lock()  # one flush at a time: the loop, flush_now and drain
        self._stop = threading.Event()
        self._abort = threading.Event()  # gives up retrying (shutdown past its deadline)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self.memory = memory if memory is not None else EventIdMemory(settings.dedup_max_ids)
        self.pacer = FlushPacer(settings.flush_min_interval_ms, settings.flush_interval_ms)
        self._prep_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flusher-prep")
        if client is not None and memory is None:
            self.memory.load(client)

    # -- component lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._lock_fd = self.reader.lock_for_flusher()
        self._stop.clear()
        self._abort.clear()
        self._thread = threading.Thread(target=self._run, name="flusher", daemon=True)
        self._thread.start()

    def stop(self, drain_timeout_s: float = 120.0) -> None:
        """Stop the loop, then seal and flush everything spooled (SIGTERM path of `serve`).

        If ClickHouse stays unavailable for `drain_timeout_s`, gives up: the data stays in the
        spool and is flushed at the next start.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        timer = threading.Timer(drain_timeout_s, self._abort.set)
        timer.start()
        try:
            self.drain()
        except Exception:
            log.exception("flusher: drain incomplete, data stays in the spool for the next start")
        finally:
            timer.cancel()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def rows_flushed(self) -> int:
        """Rows ClickHouse confirmed since this flusher was created."""
        return int(self.metrics.rows._value.get())

    def routes(self) -> list[BaseRoute]:
        return []

    def readiness(self) -> list[Check]:
        return [] if self.client is None else [ping_check(self.client)]

    def update_gauges(self) -> None:
        oldest = self.reader.sealed_segments()[:1] + self.reader.open_segments()[:1]
        self.metrics.lag.set(max(0.0, time.time() - min(s.created_s for s in oldest)) if oldest else 0.0)

    # -- flushing --------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.flush_once()
            except Exception:
                log.exception("flusher: flush failed; retrying")
            self._wake.wait(min(0.1, self.pacer.interval_ms / 4000))
            self._wake.clear()

    def flush_once(self, seal: bool = False) -> int:
        """Flush every sealed segment; seal the active one first when older than the adaptive
        flush interval (flusher.pacing; or always, with `seal`). Returns rows inserted.

        Pipelined: while ClickHouse inserts one segment (chDB and the HTTP client release the
        GIL), a worker thread reads and frames the next one.
        """
        with self._lock:
            if self.writer is not None:
                if seal:
                    self.writer.seal_active()
                else:
                    self.writer.seal_if_older(self.pacer.interval_ms)
            segments = self.reader.sealed_segments()
            if not segments:
                return 0
            rows = 0
            pending = self._prep_pool.submit(self._prepare, segments[0])
            for index in range(len(segments)):
                prepared = pending.result()
                if index + 1 < len(segments) and not self._abort.is_set():
                    pending = self._prep_pool.submit(self._prepare, segments[index + 1])
                if self._abort.is_set():
                    break
                rows += self._commit(prepared)
            if rows:
                self.pacer.observe(rows)
            return rows

    def flush_now(self) -> int:
        """Seal and flush everything spooled so far (the stitcher's freshness guarantee)."""
        return self.flush_once(seal=True)

    def drain(self) -> int:
        """Flush until no sealed segment is left (or the abort deadline passed)."""
        total = self.flush_once(seal=True)
        while self.reader.sealed_segments() and not self._abort.is_set():
            total += self.flush_once(seal=True)
        return total

    def _prepare(self, segment: SegmentInfo) -> _Prepared:
        """Read a segment and cut it into batches of rows for `events_ingest` (no I/O to ClickHouse:
        runs on the prep thread).

        A batch is whole frames from the segment's start until it holds `flush_max_rows` rows or
        more (client retries included in the count), so the batches of a segment, and their dedup
        tokens, are the same on every run. Block records go as byte ranges of the file, unparsed,
        their event ids checked against the client-retry memory a batch at a time; records of the
        previous format are completed row by row (flusher.legacy).
        """
        prepared = _Prepared(segment)
        try:
            data = segment.path.read_bytes()
        except FileNotFoundError:
            prepared.missing = True
            return prepared
        blocks, valid_end = scan_blocks(data)
        if valid_end != len(data):
            prepared.corrupt_at = valid_end
        max_rows = self.max_rows
        start = 0
        while start < len(blocks):
            stop, rows = start, 0
            while stop < len(blocks) and rows < max_rows:
                rows += blocks[stop][2] or 1
                stop += 1
            prepared.batches.append(self._batch(prepared, segment.segment_id, data, blocks[start:stop]))
            start = stop
        return prepared

    def _batch(self, prepared: _Prepared, segment_id: str, data: bytes,
               blocks: list[tuple[int, int, int, int, int]]) -> _Batch:
        """One batch of frames (`scan_blocks` tuples): block rows as byte ranges, client retries
        left out. TRICKY: the flusher's hot loop: columns transposed and sliced with `zip`/`map`
        in C, no Python statement per block on the common path."""
        batch = _Batch(blocks[0][0])
        batch.stop = blocks[-1][1]
        # columns of the blocks, transposed in C: offsets, ends, rows, ids_starts, rows_starts
        firsts, ends, counts, ids_starts, rows_starts = zip(*blocks, strict=True)
        legacy_frames = min(counts) == 0
        keys: list[bytes]
        offsets: list[int]
        if not legacy_frames and max(counts) == 1:  # single-event requests: one id, one offset each
            keys = list(map(data.__getitem__, map(slice, ids_starts, rows_starts)))
            offsets = list(firsts)
        else:
            keys, offsets = [], []
            for offset, n, ids_start in zip(firsts, counts, ids_starts, strict=True):
                if n:
                    keys += _ids_struct(n).unpack_from(data, ids_start)  # n ids of 36 bytes, cut in C
                    offsets += range(offset, offset + n)
        retries = self.memory.admit_many(keys, segment_id, offsets)
        prepared.duplicates += len(retries)
        view = memoryview(data)
        if not retries and not legacy_frames:  # the common case
            batch.parts = list(map(view.__getitem__, map(slice, rows_starts, ends)))
            batch.firsts = list(firsts)
            batch.ends = list(ends)
            batch.rows = sum(counts)
            return batch
        skip = set(retries)
        row = 0  # index into keys/offsets of the block's first row
        for offset, end, n, _, rows_start in blocks:
            if not n:
                batch.legacy = True
                self._add_legacy(batch, prepared, segment_id, data, offset, end)
                continue
            if skip.isdisjoint(range(row, row + n)):
                batch.add(view[rows_start:end], offset, end, n)
            else:
                self._add_rows(batch, data, Block(offset, end, n, 0, rows_start),
                               {i - row for i in skip if row <= i < row + n})
            row += n
        return batch

    @staticmethod
    def _add_rows(batch: _Batch, data: bytes, block: Block, skip: set[int]) -> None:
        """Add the rows of `block` but those at indexes `skip`, one range each."""
        rows = data[block.rows_start : block.end].split(b"\n")[:-1]
        last = len(rows) - 1
        for i, row in enumerate(rows):
            if i not in skip:
                batch.add(row + b"\n", block.offset + i, block.end if i == last else block.offset + i + 1, 1)

    def _add_legacy(self, batch: _Batch, prepared: _Prepared, segment_id: str, data: bytes, pos: int,
                    end: int) -> None:
        """Complete a record of the previous format into a row (flusher.legacy) and add it."""
        payload = data[pos + HEADER.size : end]
        try:
            event_id, user_agent = legacy.record_keys(payload)
            fields = legacy.agent_fields(user_agent)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            prepared.undecodable.append((Record(segment_id, pos, end, payload), f"enrich: {type(exc).__name__}: {exc}"))
            return
        if not self.memory.admit(event_id, segment_id, pos):
            prepared.duplicates += 1
            return
        batch.add(legacy.ingest_line(payload, position_tail(segment_id), pos, fields) + b"\n", pos, end, 1)

    def _commit(self, prepared: _Prepared) -> int:
        """Insert a prepared segment's batches, then delete (or quarantine) the segment."""
        if prepared.missing:
            return 0
        segment = prepared.segment
        for record, error in prepared.undecodable:
            self._dead_letter([record], 0, error, "undecodable")
        inserted = 0
        for batch in prepared.batches:
            if batch.rows:
                inserted += self._insert_batch(segment.segment_id, batch)
        if self._abort.is_set():
            return inserted
        self.metrics.duplicates.inc(prepared.duplicates)
        if prepared.corrupt_at is not None:
            lost = segment.size_bytes - prepared.corrupt_at
            target = self.reader.quarantine(segment.segment_id)
            self.metrics.corrupt.inc()
            log.error("flusher: segment %s corrupt at byte %d; %d bytes kept in %s", segment.segment_id,
                      prepared.corrupt_at, lost, target)
        else:
            self.reader.mark_done(segment.segment_id)
        self.metrics.segments.inc()
        return inserted

    def _insert_batch(self, segment_id: str, batch: _Batch) -> int:
        """Insert a batch's rows in one `INSERT` with the token `<segment>:<first frame>-<end>`; on
        a data error, split it into rows and bisect (`_insert_items`).

        TRICKY: a batch of records of the previous format keeps the previous version's token
        (first to last row sent), so a segment that version inserted but had not deleted before
        the upgrade is dropped by ClickHouse as a retry, not counted twice.
        """
        start, stop = (batch.firsts[0], batch.ends[-1]) if batch.legacy else (batch.start, batch.stop)
        token = f"{segment_id}:{start}-{stop}"
        try:  # the byte ranges as they are: the sink writes them without joining them (ClickHouseSink)
            self._with_retries(lambda: self.sink.insert("events_ingest", batch.parts, token))
        except Exception as exc:
            if not is_data_error(exc):
                raise
            return self._insert_items(self._rows_of(segment_id, batch))
        self.metrics.rows.inc(batch.rows)
        self.metrics.batches.inc()
        return batch.rows

    @staticmethod
    def _rows_of(segment_id: str, batch: _Batch) -> list[tuple[Record, bytes]]:
        """A batch row by row: (its record, its line with the newline)."""
        items: list[tuple[Record, bytes]] = []
        for part, first, end in zip(batch.parts, batch.firsts, batch.ends, strict=True):
            rows = bytes(part).split(b"\n")[:-1]
            last = len(rows) - 1
            items += [(Record(segment_id, first + i, end if i == last else first + i + 1, row), row + b"\n")
                      for i, row in enumerate(rows)]
        return items

    def _insert_items(self, items: Sequence[tuple[Record, bytes]]) -> int:
        first, last = items[0][0], items[-1][0]
        token = f"{first.segment_id}:{first.offset}-{last.end}"
        body = b"".join(row for _, row in items)
        try:
            self._with_retries(lambda: self.sink.insert("events_ingest", body, token))
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if len(items) == 1:
                self._dead_letter([items[0][0]], error_code(exc) or 0, str(exc)[:2000], "clickhouse_rejected")
                return 0
            mid = len(items) // 2
            return self._insert_items(items[:mid]) + self._insert_items(items[mid:])
        self.metrics.rows.inc(len(items))
        self.metrics.batches.inc()
        return len(items)

    def _dead_letter(self, records: Sequence[Record], code: int, error: str, reason: str) -> None:
        now = time.time()
        rows = b"\n".join(
            orjson.dumps({
                "failed_at": ch_datetime(int(now * 1000)), "error_code": code, "error": error,
                "spool_segment": r.segment_id, "spool_offset": r.offset,
                "payload": r.payload.decode("utf-8", "replace"),
            })
            for r in records
        )
        token = f"dl:{records[0].segment_id}:{records[0].offset}-{records[-1].end}"
        self._with_retries(lambda: self.sink.insert("dead_letters", rows, token))
        self.metrics.dead_letters.labels(reason=reason).inc(len(records))
        log.warning("flusher: %d record(s) dead-lettered (%s): %s", len(records), reason, error[:200])

    def _sleep(self, seconds: float) -> None:
        self._abort.wait(seconds)

    def _with_retries(self, fn: Callable[[], Any]) -> None:
        def count(state: RetryCallState) -> None:
            self.metrics.retries.inc()
            if state.attempt_number == 1 or state.attempt_number % RETRY_LOG_EVERY == 0:
                failure = state.outcome.exception() if state.outcome is not None else None
                log.warning("flusher: insert failed (attempt %d), retrying; the spool keeps the rows: %s",
                            state.attempt_number, str(failure)[:500])

        retrying = Retrying(
            retry=retry_if_exception(lambda e: not is_data_error(e)),
            wait=wait_random_exponential(multiplier=0.05, max=self.settings.flush_retry_max_s),
            stop=stop_any(stop_when_event_set(self._abort)),
            sleep=self._sleep,
            before_sleep=count,
            reraise=True,
        )
        started = time.perf_counter()
        retrying(fn)
        self.metrics.insert_seconds.observe(time.perf_counter() - started)
