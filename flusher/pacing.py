"""The adaptive flush interval: flush sooner when traffic is light, in bigger batches when heavy.

ClickHouse advises batches of 10,000 to 100,000 rows and about one insert per second per table
(https://clickhouse.com/docs/optimize/bulk-inserts): every insert makes a new part in `events`
and in each materialized-view target, which background merges must absorb. Light traffic makes
small, cheap inserts, and then waiting a full second only costs freshness.

Rule: the interval grows with the rate of events flushed,
`interval = flush_interval_ms × rate / FULL_RATE`, clamped to [`flush_min_interval_ms`,
`flush_interval_ms`], where `rate` is a moving average of events per second over the last
flushes and FULL_RATE is 10,000 events/s. So:
- at FULL_RATE and above, one insert per `flush_interval_ms` (1 s by default) carrying at least
  10,000 rows: ClickHouse's advice under load;
- below, inserts come sooner and smaller, down to one per `flush_min_interval_ms` (200 ms by
  default): at 2,000 events/s an event is visible within ~0.5 s.
With `serve --workers`, the collectors' segments are sealed in their own processes: the owner
asks them to seal (clickstream.workers) once the oldest open segment is as old as the interval for
the rate of all its flushers together. Measured at 200, 2,000 and 20,000 events/s with inserts
per second and active parts: BENCHMARKS.md "Freshness".
"""

from __future__ import annotations

import time

#: Events per second from which the flusher inserts once per `flush_interval_ms`.
FULL_RATE = 10_000.0
#: Weight of the newest flush in the moving average of the rate.
SMOOTHING = 0.3


def interval_for(rate: float, min_ms: float, max_ms: float) -> float:
    """The flush interval (ms) at `rate` events per second (the rule of the module docstring)."""
    return min(max_ms, max(min_ms, max_ms * rate / FULL_RATE))


class FlushPacer:
    """The current flush interval (ms) from the rate of past flushes (see the module docstring)."""

    def __init__(self, min_interval_ms: int, max_interval_ms: int) -> None:
        if min_interval_ms > max_interval_ms:
            raise ValueError(f"min interval {min_interval_ms} ms above max interval {max_interval_ms} ms")
        self.min_ms = min_interval_ms
        self.max_ms = max_interval_ms
        self.rate = 0.0  # events per second, moving average
        self._last: float | None = None

    @property
    def interval_ms(self) -> float:
        """How old the oldest unflushed event may get before the next flush."""
        return interval_for(self.rate, self.min_ms, self.max_ms)

    def observe(self, rows: int, now: float | None = None) -> None:
        """Account a flush of `rows` events at monotonic time `now` (seconds): the rate is the
        rows over the time since the previous flush that had rows (the flusher does not call it
        for empty polls, so an idle spell counts at the next flush)."""
        now = time.monotonic() if now is None else now
        if self._last is not None and now > self._last:
            rate = rows / (now - self._last)
            self.rate += SMOOTHING * (rate - self.rate)
        self._last = now
