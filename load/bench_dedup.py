"""The flusher's client-retry memory: per-event cost with 10 k vs 1 M event ids remembered.

Method, in one process and one run: an `EventIdMemory` (flusher.dedup) of `small` ids and one of
`large` ids, each filled to capacity first (the steady state: generations rotate and are dropped),
then fed the same stream of `events` new ids (36-byte lower-case UUID text, as in the spool's
block index) in batches of 50,000 (`admit_many`, the flusher's path for block records) and one by
one (`admit`, its path for records of the previous format). Alternating rounds, median per-event
time of each, at 10 k, 100 k and 1 M ids. Reported: µs per event at each size and the ratio
1 M / 10 k. The cost is O(1) in the number of ids; what is left of the ratio is the memory
hierarchy (a 1 M-entry hash table does not fit the CPU caches). For contrast, the same run
measures the eviction this replaced (a plain dict evicting with `del d[next(iter(d))]`, O(n) per
event once full: 96 µs at 1 M ids in the issue that found it) on fewer events.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

from flusher.dedup import EventIdMemory
from load.results import write_result


def _ids(n: int, seed: int) -> list[bytes]:
    return [str(uuid.UUID(int=(seed << 64) + i)).encode() for i in range(n)]


def _filled(size: int) -> EventIdMemory:
    memory = EventIdMemory(size)
    memory.remember((key, "warm", i) for i, key in enumerate(_ids(size, 1)))
    return memory


def _batch_us(memory: EventIdMemory, keys: list[bytes], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        memory.admit_many(chunk, "segment", list(range(start, start + len(chunk))))
    return (time.perf_counter() - started) / len(keys) * 1e6


def _single_us(memory: EventIdMemory, keys: list[bytes]) -> float:
    started = time.perf_counter()
    for i, key in enumerate(keys):
        memory.admit(key, "segment", i)
    return (time.perf_counter() - started) / len(keys) * 1e6


class PlainDictEviction:
    """The eviction this benchmark guards against: FIFO over a plain dict (O(n) once full)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.seen: dict[bytes, tuple[str, int]] = {key: ("warm", i) for i, key in enumerate(_ids(size, 1))}

    def admit(self, key: bytes, segment_id: str, offset: int) -> bool:
        known = self.seen.get(key)
        if known is not None:
            return known == (segment_id, offset)
        self.seen[key] = (segment_id, offset)
        if len(self.seen) > self.size:
            del self.seen[next(iter(self.seen))]
        return True


def _plain_us(size: int, events: int) -> float:
    plain = PlainDictEviction(size)
    keys = _ids(events, 300)
    started = time.perf_counter()
    for i, key in enumerate(keys):
        plain.admit(key, "segment", i)
    return (time.perf_counter() - started) / events * 1e6


def run(small: int = 10_000, middle: int = 100_000, large: int = 1_000_000, events: int = 500_000,
        rounds: int = 3, batch: int = 50_000, plain_events: int = 100_000) -> dict[str, Any]:
    memories = {small: _filled(small), middle: _filled(middle), large: _filled(large)}
    per_batch: dict[int, list[float]] = {size: [] for size in memories}
    per_event: dict[int, list[float]] = {size: [] for size in memories}
    for r in range(rounds):
        keys = _ids(events, 100 + r)
        for size, memory in memories.items():
            per_batch[size].append(_batch_us(memory, keys, batch))
        keys = _ids(events, 200 + r)
        for size, memory in memories.items():
            per_event[size].append(_single_us(memory, keys))
        assert all(len(m) >= size for size, m in memories.items())  # at least `size` ids all along
    result: dict[str, Any] = {
        "benchmark": "flusher_dedup_memory", "events_per_round": events, "rounds": rounds, "batch": batch,
        "small_ids": small, "large_ids": large,
        "plain_dict_eviction_us_per_event": {str(small): round(_plain_us(small, plain_events), 3),
                                             str(large): round(_plain_us(large, plain_events), 3)},
        "admit_many_us_per_event": {str(k): round(statistics.median(v), 3) for k, v in per_batch.items()},
        "admit_us_per_event": {str(k): round(statistics.median(v), 3) for k, v in per_event.items()},
    }
    result["admit_many_ratio_large_to_small"] = round(
        result["admit_many_us_per_event"][str(large)] / result["admit_many_us_per_event"][str(small)], 3)
    result["admit_ratio_large_to_small"] = round(
        result["admit_us_per_event"][str(large)] / result["admit_us_per_event"][str(small)], 3)
    return write_result("dedup", result)


if __name__ == "__main__":
    run()
