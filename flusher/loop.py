"""The flusher: sealed spool segments -> enriched rows -> ClickHouse `events`, exactly once.

Rows go to `events_ingest` (sql/0007_ingest.sql), whose materialized view enriches them into
`events`; the flusher only appends the spool position and the parsed User-Agent (flusher.enrich).

Exactly once (docs/architecture.md "Exactly once"): a segment is cut into batches of at most
`flush_max_rows` records from offset 0, so the batches of a sealed segment are the same on every
run; each batch is inserted with `insert_deduplication_token = "<segment>:<first offset>-<end>"`
and the segment is deleted only after ClickHouse confirmed every batch. A crash between insert
and delete re-inserts the same ranges with the same tokens, which ClickHouse drops (the window
is set on `events` and on every materialized-view target).

Failures: a transient error (connection, timeout, too many parts: any error that is
not a data error) is retried with capped, jittered exponential backoff (tenacity) while the
spool keeps the data; a data error (clickstream.core.clickhouse.DATA_ERROR_CODES) splits the batch in
halves until the offending rows are alone, and those go to `dead_letters` with the error.
Nothing is skipped without a counted reason (`clickstream_flusher_dead_letters_total{reason}`).

Client retries: a browser that lost a 202 sends the same events again, so the same `event_id`
can sit at two spool positions. The flusher remembers the spool position of the last
`dedup_max_ids` event ids (flusher.dedup.EventIdMemory: rebuilt from `events` at start, shared by
the flushers of every spool of a process) and drops a record whose event_id it already holds at
another position, counted as `clickstream_flusher_duplicates_total`. The same record at the same
position (a re-flush after a crash) is not a duplicate: the dedup token takes care of it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.routing import BaseRoute
from tenacity import Retrying, retry_if_exception, stop_any, stop_when_event_set, wait_random_exponential

from clickstream.core.clickhouse import ClickHouseSink, Sink, error_code, is_data_error, ping_check
from clickstream.core.component import Check
from clickstream.core.settings import Settings
from clickstream.core.spool import CorruptSegmentError, Record, SegmentInfo, SpoolReader, SpoolWriter, scan
from clickstream.core.times import ch_datetime
from flusher import enrich
from flusher.dedup import EventIdMemory

log = logging.getLogger(__name__)


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


@dataclasses.dataclass
class _Prepared:
    """A segment read and framed for insertion, not yet sent."""

    segment: SegmentInfo
    batches: list[list[tuple[Record, bytes]]] = dataclasses.field(default_factory=list)
    undecodable: list[tuple[Record, str]] = dataclasses.field(default_factory=list)
    duplicates: int = 0
    corrupt_at: int | None = None
    missing: bool = False


class Flusher:
    """Moves sealed spool segments into ClickHouse; a `web.create_app` component in `serve`."""

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
        self._prep_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flusher-prep")
        # the client-retry memory; shared by the flushers of several spools in `serve --workers`
        if memory is None:
            memory = EventIdMemory(settings.dedup_max_ids)
            if client is not None:
                memory.load(client)
        self.memory = memory

    def _is_duplicate(self, event_id: bytes, record: Record) -> bool:
        """True when `event_id` was already flushed from another spool position (flusher.dedup)."""
        return not self.memory.admit(event_id, record.segment_id, record.offset)

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

    def routes(self) -> list[BaseRoute]:
        return []

    def readiness(self) -> list[Check]:
        return [] if self.client is None else [ping_check(self.client)]

    def update_gauges(self) -> None:
        oldest = self.reader.sealed_segments()[:1] + self.reader.open_segments()[:1]
        self.metrics.lag.set(max(0.0, time.time() - min(s.created_s for s in oldest)) if oldest else 0.0)

    # -- flushing --------------------------------------------------------------------------
    def _run(self) -> None:
        interval_s = self.settings.flush_interval_ms / 1000
        while not self._stop.is_set():
            try:
                self.flush_once()
            except Exception:
                log.exception("flusher: flush failed; retrying")
            self._wake.wait(min(0.1, interval_s / 4))
            self._wake.clear()

    def flush_once(self, seal: bool = False) -> int:
        """Flush every sealed segment; seal the active one first when older than the flush
        interval (or always, with `seal`). Returns rows inserted.

        Pipelined: while ClickHouse inserts one segment (chDB and the HTTP client release the
        GIL), a worker thread reads and frames the next one.
        """
        with self._lock:
            if self.writer is not None:
                if seal:
                    self.writer.seal_active()
                else:
                    self.writer.seal_if_older(self.settings.flush_interval_ms)
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
        """Read a segment and turn its records into `events_ingest` lines, in batches (no I/O to
        ClickHouse: runs on the prep thread)."""
        prepared = _Prepared(segment)
        try:
            records = self.reader.records(segment)
        except CorruptSegmentError as exc:
            records, _ = scan(segment.path.read_bytes(), segment.segment_id)
            prepared.corrupt_at = exc.offset
        except FileNotFoundError:
            prepared.missing = True
            return prepared
        # TRICKY: the hot loop of the flusher (~200k records/s): locals, bytes all the way, the
        # per-segment prefix built once.
        prefix = enrich.position_prefix(segment.segment_id)
        keys, fields, line, seen = enrich.record_keys, enrich.agent_fields, enrich.ingest_line, self._is_duplicate
        for start in range(0, len(records), self.max_rows):
            items: list[tuple[Record, bytes]] = []
            append = items.append
            for record in records[start : start + self.max_rows]:
                payload = record.payload
                try:
                    event_id, user_agent = keys(payload)
                    agent = fields(user_agent)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
                    prepared.undecodable.append((record, f"enrich: {type(exc).__name__}: {exc}"))
                    continue
                if seen(event_id, record):
                    prepared.duplicates += 1
                    continue
                append((record, line(payload, prefix, record.offset, agent)))
            if items:
                prepared.batches.append(items)
        return prepared

    def _commit(self, prepared: _Prepared) -> int:
        """Insert a prepared segment's batches, then delete (or quarantine) the segment."""
        if prepared.missing:
            return 0
        segment = prepared.segment
        for record, error in prepared.undecodable:
            self._dead_letter([record], 0, error, "undecodable")
        inserted = sum(self._insert_items(batch) for batch in prepared.batches)
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

    def _insert_items(self, items: Sequence[tuple[Record, bytes]]) -> int:
        first, last = items[0][0], items[-1][0]
        token = f"{first.segment_id}:{first.offset}-{last.end}"
        body = b"\n".join(row for _, row in items)
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
        def count(_: Any) -> None:
            self.metrics.retries.inc()

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
