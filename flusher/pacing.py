"""The adaptive flush interval: flush sooner when traffic is light, in bigger batches when heavy.

ClickHouse's guidance is to insert in large batches, about one insert per second per table under
load (https://clickhouse.com/docs/optimize/bulk-inserts): every insert makes a new part in
`events` and in each materialized-view target, which background merges must absorb. Light traffic
makes small, cheap inserts, and then waiting a full second only costs freshness.

Rule (a duty cycle): after each flush the interval becomes `insert time / duty`, clamped to
[`flush_min_interval_ms`, `flush_interval_ms`], where `insert time` is a moving average of the
seconds ClickHouse spent on the last flushes and `duty` (0.2) is the share of time the flusher may
keep ClickHouse busy with inserts. So:
- light traffic: inserts take a few ms, the interval is the minimum (200 ms by default), data is
  visible within ~0.5 s;
- heavy traffic: inserts grow with the batch until the interval reaches `flush_interval_ms`
  (1 s by default): about one insert per second per table, as ClickHouse advises.
Measured at 200, 2,000 and 20,000 events/s with the active part counts: BENCHMARKS.md "Freshness".
"""

from __future__ import annotations

#: Share of wall time the flusher may keep ClickHouse busy inserting before it grows its batches.
DUTY = 0.2
#: Weight of the newest flush in the moving average of insert time.
SMOOTHING = 0.3


class FlushPacer:
    """The current flush interval (ms) from the insert time of past flushes (see the module docstring)."""

    def __init__(self, min_interval_ms: int, max_interval_ms: int) -> None:
        if min_interval_ms > max_interval_ms:
            raise ValueError(f"min interval {min_interval_ms} ms above max interval {max_interval_ms} ms")
        self.min_ms = min_interval_ms
        self.max_ms = max_interval_ms
        self._insert_s = 0.0

    @property
    def interval_ms(self) -> float:
        """How old the oldest unflushed event may get before the next flush."""
        return min(self.max_ms, max(self.min_ms, self._insert_s / DUTY * 1000))

    def observe(self, insert_s: float) -> None:
        """Account one flush that kept ClickHouse busy for `insert_s` seconds (0 for an empty one
        is not observed: idle time says nothing about the cost of an insert)."""
        if insert_s > 0:
            self._insert_s += SMOOTHING * (insert_s - self._insert_s) if self._insert_s else insert_s
