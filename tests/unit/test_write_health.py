"""A write that fails half way (EFBIG under RLIMIT_FSIZE stands in for a full disk, without root):
rejected/ keeps all of a call's entries or none, and readiness (WriteHealth) stays off until a probe
write succeeds again. The same cases on a real full tmpfs: tests/reliability/test_overload_disk.py."""

from __future__ import annotations

import contextlib
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from clickstream.core.files import WriteHealth
from collector.rejected import RejectedStore


@contextlib.contextmanager
def file_size_limit(limit_bytes: int) -> Iterator[None]:
    """Files of this process cannot grow past `limit_bytes` (writes fail with EFBIG) inside the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def entry(i: int) -> dict[str, object]:
    return {"reason": "schema_violation", "index": i, "path": "/type", "message": "bad", "event": {"n": i}}


def test_a_failed_rejected_write_leaves_nothing_half_written(tmp_path: Path) -> None:
    store = RejectedStore(tmp_path)
    store.add([entry(0)])
    (path,) = tmp_path.glob("rejected-*.jsonl")
    size = path.stat().st_size
    with file_size_limit(size + 100), pytest.raises(OSError):
        store.add([entry(i) for i in range(1, 50)])  # about 5 KB: fails past the first 100 bytes
    assert path.stat().st_size == size  # the partial write was cut off
    store.add([entry(99)])  # and the store goes on
    store.close()
    assert [e["index"] for e in RejectedStore(tmp_path).read_all()] == [0, 99]


def test_readiness_stays_off_after_a_failed_write_until_a_probe_succeeds(tmp_path: Path) -> None:
    health = WriteHealth(tmp_path, need_bytes=64 * 1024)
    assert health.check()[0]
    health.failed(OSError(28, "No space left on device"))
    with file_size_limit(1024):  # a 64 KiB probe cannot be written
        ok, detail = health.check()
    assert not ok and "No space left on device" in detail
    ok, _ = health.check()  # space is back: the probe clears the failure
    assert ok and health.last_error == ""
    assert not list(tmp_path.iterdir())  # the probe file is gone


def test_readiness_off_when_the_directory_has_less_room_than_a_request(tmp_path: Path) -> None:
    ok, detail = WriteHealth(tmp_path, need_bytes=1 << 62).check()
    assert not ok and "bytes free" in detail
