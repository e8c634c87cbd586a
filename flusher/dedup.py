"""The flusher's client-retry memory: event ids already flushed, and from which spool position.

A browser that lost a 202 sends the same events again (beacon.js keeps each event's `event_id`),
so the same id can sit at two spool positions. An event is a *client retry*, dropped and counted,
when its id is remembered at another position; the same id at the same position is the same
record flushed again after a crash, which the insert's dedup token takes care of
(docs/architecture.md "Exactly once"), so it is let through.

One `EventIdMemory` is shared by the flushers of every spool of a process (`serve --workers`: one
spool per collector process, one flusher per spool, all in the process that owns ClickHouse): a
retry that reaches another collector process lands in another spool, and only a memory shared by
all their flushers sees both. It has its own lock (the flushers run on their own threads).

At start it is rebuilt from ClickHouse (`load`): the `max_ids` most recently received events of
`events` with their spool positions.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from clickhouse_connect.driver.client import Client

Position = tuple[str, int]


class EventIdMemory:
    """The positions of the last `max_ids` event ids first seen, oldest evicted first in O(1)."""

    def __init__(self, max_ids: int) -> None:
        self.max_ids = max_ids
        # TRICKY: an OrderedDict, not a dict: evicting the oldest of a plain dict with
        # `del d[next(iter(d))]` is O(n) (iteration walks the deleted slots at the front), 96 µs
        # per event at 1M ids; popitem(last=False) is O(1) (BENCHMARKS.md "Flusher dedup memory").
        self._seen: OrderedDict[bytes, Position] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def load(self, client: Client) -> int:
        """Remember the positions of the `max_ids` most recently received events in ClickHouse
        (oldest first, so they are evicted first); returns how many."""
        rows = client.query(
            "SELECT toString(event_id), spool_segment, spool_offset FROM events "
            "ORDER BY received_at DESC LIMIT {n:UInt64}", parameters={"n": self.max_ids}).result_rows
        with self._lock:
            for event_id, segment, offset in reversed(rows):
                self._seen[str(event_id).encode()] = (str(segment), int(offset))
            self._evict()
        return len(rows)

    def admit(self, event_id: bytes, segment_id: str, offset: int) -> bool:
        """False when `event_id` is remembered at another position (a client retry); otherwise
        remember it (when new) and return True."""
        position = (segment_id, offset)
        with self._lock:
            known = self._seen.get(event_id)
            if known is not None:
                return known == position
            self._seen[event_id] = position
            self._evict()
            return True

    def _evict(self) -> None:
        while len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
