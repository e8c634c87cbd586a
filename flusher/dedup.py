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
- two generations of plain dicts, event id -> position as one int: when the newer generation
  holds `max_ids` ids it becomes the older one and the oldest generation is dropped, so at least
  the last `max_ids` ids (at most twice as many) are remembered, eviction costs nothing per
  event, and, TRICKY, the dicts hold only bytes and ints, so CPython's garbage collector does not
  track them: a collection never walks a million entries (an OrderedDict of tuples is tracked;
  its traversal made each flushed row ~3 µs dearer at 1 M ids, BENCHMARKS.md "Flusher dedup
  memory"). A plain dict evicting its oldest key one by one would be O(n) per event (the cliff:
  `del d[next(iter(d))]` walks the deleted slots at the front, 96 µs per event at 1 M ids).
- Memory: ~190 bytes per id remembered (key, int, dict slot), between `max_ids` and twice as many
  ids (1 M: 190-380 MB).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from clickhouse_connect.driver.client import Client

#: Bits of a position int that hold the offset (offsets below 1 TiB); the segment id is above them.
OFFSET_BITS = 40


def position(segment_id: str, offset: int) -> int:
    """A spool position as one int (untracked by the GC, compared in one step): the segment id's
    bytes above `OFFSET_BITS` bits of offset."""
    return (int.from_bytes(segment_id.encode(), "big") << OFFSET_BITS) | offset


class EventIdMemory:
    """The positions of at least the last `max_ids` event ids first seen (see the module docstring)."""

    def __init__(self, max_ids: int) -> None:
        self.max_ids = max_ids
        self._new: dict[bytes, int] = {}
        self._old: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._segment = ("", 0)  # the last segment id and its position base

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def load(self, client: Client) -> int:
        """Remember the positions of the `max_ids` most recently received events in ClickHouse
        (oldest first); returns how many."""
        rows = client.query(
            "SELECT toString(event_id), spool_segment, spool_offset FROM events "
            "ORDER BY received_at DESC LIMIT {n:UInt64}", parameters={"n": self.max_ids}).result_rows
        self.remember((str(event_id).encode(), str(segment), int(offset)) for event_id, segment, offset
                      in reversed(rows))
        return len(rows)

    def remember(self, entries: Iterable[tuple[bytes, str, int]]) -> None:
        """Remember (event id, segment id, offset) as first seen now, without checking them."""
        with self._lock:
            for event_id, segment_id, offset in entries:
                self._new[event_id] = position(segment_id, offset)
                if len(self._new) >= self.max_ids:
                    self._rotate()

    def admit(self, event_id: bytes, segment_id: str, offset: int) -> bool:
        """False when `event_id` (lower-case canonical text) is remembered at another position (a
        client retry); otherwise remember it (when new) and return True."""
        with self._lock:
            return self._admit(event_id, self._base(segment_id) | offset)

    def admit_many(self, keys: list[bytes], segment_id: str, offsets: list[int]) -> list[int]:
        """Admit events `keys[i]` (lower-case canonical text) at positions (segment_id, offsets[i]);
        return the indexes of the client retries (usually none), in order.

        Fast path (no id known, none repeated among `keys`): two set tests and one update, in C.
        """
        with self._lock:
            base = self._base(segment_id)
            new, old = self._new, self._old
            if new.keys().isdisjoint(keys) and old.keys().isdisjoint(keys) and len(set(keys)) == len(keys):
                new.update(zip(keys, map(base.__or__, offsets), strict=True))
                if len(new) >= self.max_ids:
                    self._rotate()
                return []
            return [i for i, key in enumerate(keys) if not self._admit(key, base | offsets[i])]

    def _base(self, segment_id: str) -> int:
        if self._segment[0] != segment_id:
            self._segment = (segment_id, position(segment_id, 0))
        return self._segment[1]

    def _admit(self, event_id: bytes, where: int) -> bool:
        known = self._new.get(event_id)
        if known is None:
            known = self._old.get(event_id)
        if known is not None:
            return known == where
        self._new[event_id] = where
        if len(self._new) >= self.max_ids:
            self._rotate()
        return True

    def _rotate(self) -> None:
        """The newer generation becomes the older one; the oldest is forgotten."""
        self._old, self._new = self._new, {}
