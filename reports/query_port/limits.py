"""Admission: at most `max_concurrent_queries` queries in the engine, a short queue, then 503.

Dashboards share the process with ingest (`serve`): every query the port admits takes CPU from the
collector and the flusher. BENCHMARKS.md "Query port" measures the collector's p99 with and without
a heavy dashboard query; the defaults (2 queries of 1 thread each, 10 s of queue) follow from it.
Over the cap a query waits up to `queue_max_wait_ms` (ClickHouse's setting of that name), then gets
code 202 TOO_MANY_SIMULTANEOUS_QUERIES as HTTP 503 + Retry-After (back-pressure, as the collector
answers a full spool).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from reports.query_port.config import QueryPortConfig
from reports.query_port.engine import Job
from reports.query_port.errors import (
    QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    QueryPortError,
    error,
)

#: How often a queued query looks for a free slot (s). Slots are taken from worker threads' point
#: of view too, so the wait polls instead of awaiting one event loop's primitive.
_POLL_S = 0.02


def busy(config: QueryPortConfig, message: str) -> QueryPortError:
    """Code 202 as HTTP 503 + Retry-After."""
    return error(TOO_MANY_SIMULTANEOUS_QUERIES, message, status=503,
                 headers={"Retry-After": str(config.retry_after_s)})


class Admission:
    """Query slots and the registry of running queries (by query_id, for KILL on disconnect/stop)."""

    def __init__(self, config: QueryPortConfig) -> None:
        self.config = config
        self._slots = threading.BoundedSemaphore(config.max_concurrent_queries)
        self._running: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.rejected_busy = 0

    async def acquire(self, gone: Callable[[], Awaitable[bool]]) -> None:
        """Take a slot, waiting at most `queue_max_wait_ms` (less if `gone()` says the client left).
        Raises QueryPortError 202 (HTTP 503 + Retry-After)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.queue_max_wait_ms / 1000
        while not self._slots.acquire(blocking=False):
            if loop.time() >= deadline or await gone():
                self.rejected_busy += 1
                raise busy(self.config, "Too many simultaneous queries. "
                                        f"Maximum: {self.config.max_concurrent_queries}")
            await asyncio.sleep(_POLL_S)

    def release(self) -> None:
        """Give back a slot taken by `acquire`."""
        self._slots.release()

    def register(self, job: Job) -> None:
        """Record a running query. Raises 216 when a query with the same query_id is running."""
        with self._lock:
            if job.query_id in self._running:
                raise error(QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING, f"Query with id = {job.query_id} is already running")
            self._running[job.query_id] = job

    def unregister(self, job: Job) -> None:
        with self._lock:
            if self._running.get(job.query_id) is job:
                del self._running[job.query_id]

    def running(self) -> list[Job]:
        """The queries in the engine now."""
        with self._lock:
            return list(self._running.values())
