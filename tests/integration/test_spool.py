"""The durable spool (clickstream.core.spool) on a real disk: crash safety, torn tails, sealing, reader, quota, lock.

Every assertion reads bytes back from the segment files; nothing inspects the writer's internals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from clickstream.core.spool import (
    HEADER,
    CorruptSegmentError,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
    SpoolPosition,
    SpoolReader,
    SpoolWriter,
    frame,
    recover,
    scan,
)
from tests.conftest import ROOT
from tests.integration.spool_writer import payload

WRITER_SCRIPT = Path(__file__).with_name("spool_writer.py")


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `condition` (the pass condition is the state it checks, the timeout only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the timeout")
        time.sleep(0.01)


def payloads_on_disk(directory: Path) -> list[bytes]:
    return [r.payload for r in SpoolReader(directory).iter_all()]


# -- crash: SIGKILL a writer, recover, read back everything it called durable -------------------
@pytest.mark.parametrize("fsync_interval_ms", [0, 20], ids=["fsync-per-append", "group-commit-20ms"])
def test_records_reported_durable_survive_sigkill(tmp_path: Path, fsync_interval_ms: int) -> None:
    spool = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(WRITER_SCRIPT), str(spool), str(fsync_interval_ms), "65536"],
                            stdout=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        with pytest.raises(SpoolLockedError):  # the live writer holds the directory
            SpoolWriter(spool).open()
        reported: list[tuple[int, str, int]] = []
        while len(reported) < 400 or len({seg for _, seg, _ in reported}) < 3:
            line = proc.stdout.readline()
            assert line, "writer exited early"
            index, seg, end = line.split()
            reported.append((int(index), seg.decode(), int(end)))
        proc.send_signal(signal.SIGKILL)
        for line in proc.stdout.read().splitlines():  # what it printed before dying
            parts = line.split()
            if len(parts) == 3 and all(parts):
                reported.append((int(parts[0]), parts[1].decode(), int(parts[2])))
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [i for i, _, _ in reported] == list(range(len(reported)))  # reported in order, no gaps

    writer = SpoolWriter(spool).open()  # recovery: cut torn tails, seal what the dead writer left
    writer.close()
    assert not [p for p in spool.iterdir() if p.suffix == ".open"]
    records = list(SpoolReader(spool).iter_all())
    assert len(records) >= len(reported)
    assert [r.payload for r in records] == [payload(i) for i in range(len(records))]  # intact, in order
    for n, segment_id, offset in reported:  # positions are stable across the crash
        assert (records[n].segment_id, records[n].end) == (segment_id, offset)


# -- torn tails ------------------------------------------------------------------------------
TAILS = {
    "half-record": frame(b'{"type":"page_view","cut":"here"}')[:20],
    "header-only": HEADER.pack(500, 0),
    "bad-crc": HEADER.pack(5, 12345) + b"hello",
    "garbage": os.urandom(3) + b"\xff" * 61,
    "zero-filled": b"\x00" * 4096,  # machine crash: size grew, data blocks did not
}


@pytest.mark.parametrize("tail", list(TAILS.values()), ids=list(TAILS))
def test_recovery_cuts_a_torn_tail_and_keeps_every_record_before_it(tmp_path: Path, tail: bytes) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    good = [b'{"n":1}', b'{"n":2}', b"x" * 5000]
    segment = spool / "00000000000000001-deadbeef.open"
    segment.write_bytes(b"".join(frame(p) for p in good) + tail)

    writer = SpoolWriter(spool).open()
    assert writer.torn_bytes_cut == len(tail)
    position = writer.append([b'{"n":3}'])
    writer.close()

    sealed = SpoolReader(spool).sealed_segments()
    assert sealed[0].segment_id == "00000000000000001-deadbeef"
    assert sealed[0].size_bytes == sum(len(frame(p)) for p in good)
    assert SpoolReader(spool).records(sealed[0])[-1].payload == good[-1]
    assert payloads_on_disk(spool) == [*good, b'{"n":3}']
    assert position.segment_id == sealed[1].segment_id


def test_recovery_removes_an_open_segment_with_no_complete_record(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "00000000000000001-deadbeef.open").write_bytes(frame(b"abc")[:5])
    assert recover(spool) == 5
    assert list(spool.iterdir()) == []


def test_scan_stops_at_the_first_bad_record() -> None:
    data = frame(b"one") + frame(b"two") + b"\x00" * 8 + frame(b"three")
    records, end = scan(data, "seg")
    assert [(r.payload, r.offset, r.end) for r in records] == [(b"one", 0, 11), (b"two", 11, 22)]
    assert end == 22


def test_empty_records_are_refused() -> None:
    with pytest.raises(ValueError):
        frame(b"")


# -- group commit ----------------------------------------------------------------------------
def test_group_commit_makes_appends_durable_without_waiting_for_them(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, fsync_interval_ms=20) as writer:
        position = writer.append([b"a", b"b"])
        assert position == SpoolPosition(position.segment_id, 2 * (HEADER.size + 1))
        wait_until(lambda: writer.durable_position() >= position)
        later = writer.append([b"c"])
        writer.sync_to(later)
        assert writer.durable_position() >= later
    assert payloads_on_disk(tmp_path) == [b"a", b"b", b"c"]


# -- sealing ---------------------------------------------------------------------------------
def test_segments_are_sealed_by_size(tmp_path: Path) -> None:
    record = b"r" * 292  # 300 bytes framed
    with SpoolWriter(tmp_path, segment_max_bytes=1000, segment_max_age_ms=3_600_000) as writer:
        positions = [writer.append([record]) for _ in range(10)]
        reader = SpoolReader(tmp_path)
        wait_until(lambda: len(reader.sealed_segments()) == 3)  # sealed off the appending thread
        assert [s.size_bytes for s in reader.sealed_segments()] == [900, 900, 900]
        assert len(reader.open_segments()) == 1
    segments = SpoolReader(tmp_path).sealed_segments()
    assert [s.size_bytes for s in segments] == [900, 900, 900, 300]
    assert [s.segment_id for s in segments] == sorted({p.segment_id for p in positions})
    assert payloads_on_disk(tmp_path) == [record] * 10


def test_sync_to_seals_a_segment_detached_by_size(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, segment_max_bytes=100, fsync_interval_ms=0) as writer:
        first = writer.append([b"a" * 60])
        second = writer.append([b"b" * 60])  # does not fit: the first segment is detached
        assert second.segment_id > first.segment_id
        writer.sync_to(first)
        assert writer.durable_position() >= first
        assert [s.segment_id for s in SpoolReader(tmp_path).sealed_segments()] == [first.segment_id]
        writer.sync_to(second)
        assert writer.durable_position() >= second


def test_a_batch_larger_than_a_segment_is_kept_whole(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, segment_max_bytes=100) as writer:
        writer.append([b"small"])
        writer.append([b"x" * 300, b"y" * 300])
    sizes = [s.size_bytes for s in SpoolReader(tmp_path).sealed_segments()]
    assert sizes == [13, 616]


def test_segments_are_sealed_by_age(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, segment_max_age_ms=50, fsync_interval_ms=20) as writer:
        writer.append([b"first"])
        reader = SpoolReader(tmp_path)
        wait_until(lambda: len(reader.sealed_segments()) == 1)
        assert reader.open_segments() == []
        assert [r.payload for r in reader.records(reader.sealed_segments()[0])] == [b"first"]
        writer.append([b"second"])  # a new segment
        wait_until(lambda: len(reader.sealed_segments()) == 2)
    assert payloads_on_disk(tmp_path) == [b"first", b"second"]


# -- reader ----------------------------------------------------------------------------------
def test_reader_lists_in_order_reads_with_stable_positions_and_mark_done_deletes(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, segment_max_bytes=64) as writer:
        ends = [writer.append([f"record-{i}".encode()]) for i in range(6)]
    reader = SpoolReader(tmp_path)
    segments = reader.sealed_segments()
    assert [s.segment_id for s in segments] == sorted(s.segment_id for s in segments)
    records = [r for s in segments for r in reader.records(s)]
    assert [r.payload for r in records] == [f"record-{i}".encode() for i in range(6)]
    assert [SpoolPosition(r.segment_id, r.end) for r in records] == ends
    first = segments[0]
    reader.mark_done(first.segment_id)
    assert not first.path.exists()
    assert [s.segment_id for s in reader.sealed_segments()] == [s.segment_id for s in segments[1:]]
    reader.mark_done(first.segment_id)  # idempotent


def test_reader_reports_a_corrupt_sealed_segment(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path) as writer:
        writer.append([b"good-1", b"good-2", b"victim"])
    reader = SpoolReader(tmp_path)
    [segment] = reader.sealed_segments()
    data = bytearray(segment.path.read_bytes())
    data[-2] ^= 0xFF
    segment.path.write_bytes(bytes(data))
    with pytest.raises(CorruptSegmentError) as info:
        reader.records(segment)
    assert info.value.offset == 2 * (HEADER.size + 6)
    assert payloads_on_disk(tmp_path) == [b"good-1", b"good-2"]
    moved = reader.quarantine(segment.segment_id)
    assert moved.parent.name == "corrupt" and reader.sealed_segments() == []


# -- quota and lock --------------------------------------------------------------------------
def test_quota_refuses_appends_until_the_flusher_frees_space(tmp_path: Path) -> None:
    with SpoolWriter(tmp_path, max_bytes=1000, segment_max_bytes=400) as writer:
        accepted = 0
        with pytest.raises(SpoolFullError):
            for _ in range(100):
                writer.append([b"e" * 92])
                accepted += 1
        assert accepted == 10 and writer.over_quota()
        reader = SpoolReader(tmp_path)
        wait_until(lambda: len(reader.sealed_segments()) == 2)  # 4 + 4 records; 2 in the active one
        for segment in reader.sealed_segments():
            reader.mark_done(segment.segment_id)
        wait_until(lambda: not writer.over_quota())  # the writer rescans the directory
        writer.append([b"after"])
    assert payloads_on_disk(tmp_path)[-1] == b"after"


def test_one_writer_per_directory(tmp_path: Path) -> None:
    first = SpoolWriter(tmp_path).open()
    try:
        with pytest.raises(SpoolLockedError):
            SpoolWriter(tmp_path).open()
    finally:
        first.close()
    with pytest.raises(SpoolError):
        first.append([b"late"])  # closed: the lock is gone
    SpoolWriter(tmp_path).open().close()  # released
