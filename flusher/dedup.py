"""The flusher's client-retry memory: event ids already flushed, and from which spool position.

A browser that lost a 202 sends the same events again (beacon.js keeps each event's `event_id`),
so the same id can sit at two spool positions. An event is a *client retry*, dropped and counted,
when its id is remembered at another position; the same id at the same position is the same
record flushed again after a crash, which the insert's dedup token takes care of
(docs/architecture.md "Exactly once"), so it is let through.

Where this runs, and why it is exact across restarts:
- in the process that owns ClickHouse, on the flusher's prep thread, not in the collector: a
  retry may reach another collector process (several collectors, one spool each, one flusher
  process draining every spool), and only the flusher sees every spool; one `EventIdMemory` can
  be shared by the flushers of several spools (it has its own lock);
- it reads the event ids from the block records' id index (clickstream.core.spool "Block
  records"): 36 bytes per event, no JSON parse, ~0.4 µs per event whether 10 k or 1 M ids are
  remembered (BENCHMARKS.md "Flusher dedup memory");
- at start it is rebuilt from ClickHouse: the `max_ids` most recently received events of
  `events` with their positions (`load`); events still in the spool are met again in spool order.
  So a retry is caught exactly when its original is among the last `max_ids` ids flushed or
  still spooled before it (first in, first out: a retry comes soon after its original).
- Memory: ~280 bytes per id remembered (key, position, ordered-dict links; 1 M ids ≈ 280 MB).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from itertools import repeat

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
        self.remember((str(event_id).encode(), (str(segment), int(offset))) for event_id, segment, offset
                      in reversed(rows))
        return len(rows)

    def remember(self, entries: Iterable[tuple[bytes, Position]]) -> None:
        """Remember (event id, position) pairs as first seen now, without checking them."""
        with self._lock:
            self._seen.update(entries)
            self._evict()

    def admit(self, event_id: bytes, segment_id: str, offset: int) -> bool:
        """False when `event_id` (lower-case canonical text) is remembered at another position (a
        client retry); otherwise remember it (when new) and return True."""
        with self._lock:
            return self._admit(event_id, (segment_id, offset))

    def admit_many(self, keys: list[bytes], segment_id: str, offsets: list[int]) -> list[int]:
        """Admit events `keys[i]` (lower-case canonical text) at positions (segment_id, offsets[i]);
        return the indexes of the client retries (usually none), in order.

        Fast path (no id known, none repeated among `keys`): one set test and one update, in C.
        """
        seen = self._seen
        with self._lock:
            if seen.keys().isdisjoint(keys) and len(set(keys)) == len(keys):
                seen.update(zip(keys, zip(repeat(segment_id), offsets), strict=True))
                self._evict()
                return []
            return [i for i, key in enumerate(keys) if not self._admit(key, (segment_id, offsets[i]))]

    def _admit(self, event_id: bytes, position: Position) -> bool:
        known = self._seen.get(event_id)
        if known is not None:
            return known == position
        self._seen[event_id] = position
        self._evict()
        return True

    def _evict(self) -> None:
        excess = len(self._seen) - self.max_ids
        if excess > 0:  # popitem(last=False) `excess` times, the loop in C (deque of length 0 consumes)
            deque(map(self._seen.popitem, repeat(False, excess)), maxlen=0)
