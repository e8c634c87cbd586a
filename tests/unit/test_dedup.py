"""The flusher's client-retry memory (flusher.dedup): what it remembers and for how long."""

from __future__ import annotations

import gc
import uuid

from flusher.dedup import EventIdMemory


def ids(n: int, seed: int = 0) -> list[bytes]:
    return [str(uuid.UUID(int=(seed << 64) + i)).encode() for i in range(n)]


def test_a_retry_at_another_position_is_refused_the_same_position_is_not() -> None:
    memory = EventIdMemory(100)
    [a, b] = ids(2)
    assert memory.admit_many([a, b], "seg-1", [10, 11]) == []
    assert memory.admit(a, "seg-1", 10)  # a re-flush of the same record: let through (dedup token)
    assert not memory.admit(a, "seg-2", 0)  # a client retry
    assert memory.admit_many([b, *ids(1, seed=1)], "seg-1", [11, 12]) == []
    assert memory.admit_many([*ids(1, seed=2), b], "seg-3", [0, 1]) == [1]


def test_repeats_inside_one_batch_keep_the_first() -> None:
    [a, b] = ids(2)
    memory = EventIdMemory(100)
    assert memory.admit_many([a, b, a, a], "seg", [0, 1, 2, 3]) == [2, 3]
    assert memory.admit(a, "seg", 0) and not memory.admit(a, "seg", 2)


def test_at_least_the_last_max_ids_are_remembered_at_most_twice_as_many() -> None:
    memory = EventIdMemory(1000)
    stream = ids(10_000)
    for start in range(0, len(stream), 70):
        chunk = stream[start : start + 70]
        assert memory.admit_many(chunk, "seg", list(range(start, start + len(chunk)))) == []
        seen = start + len(chunk)
        assert 1000 <= len(memory) <= 2000 + 70 or seen < 1000
        # every one of the last 1,000 ids is still known (a retry of it is refused)
        assert all(not memory.admit(key, "other", 0) for key in stream[max(0, seen - 1000) : seen : 97])
    assert memory.admit(stream[0], "other", 0)  # long forgotten: taken as new


def test_the_memory_is_invisible_to_the_garbage_collector() -> None:
    memory = EventIdMemory(10_000)
    memory.admit_many(ids(5000), "01796196969581621-226f36ec", list(range(5000)))
    gc.collect()
    assert not gc.is_tracked(memory._new) and not gc.is_tracked(memory._old)
