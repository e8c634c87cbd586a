"""clickstream.core.clickhouse.write_all: the flusher's byte ranges reach the insert file whole and in order."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickstream.core import clickhouse
from clickstream.core.clickhouse import IOV_MAX, write_all


def _ranges(chunks: list[bytes]) -> list[bytes | memoryview]:
    """The chunks as the flusher hands them: memoryview slices of one buffer, with some bytes between."""
    view = memoryview(b"".join(chunks))
    out: list[bytes | memoryview] = []
    pos = 0
    for i, chunk in enumerate(chunks):
        out.append(view[pos : pos + len(chunk)] if i % 2 else chunk)
        pos += len(chunk)
    return out


def _written(ranges: Sequence[bytes | memoryview]) -> bytes:
    with tempfile.TemporaryFile() as fh:
        write_all(fh.fileno(), ranges)
        fh.seek(0)
        return fh.read()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=3 * IOV_MAX + 7))
def test_ranges_written_in_order_past_iov_max(chunks: list[bytes]) -> None:
    assert _written(_ranges(chunks)) == b"".join(chunks)


def test_short_writes_are_completed(monkeypatch: pytest.MonkeyPatch) -> None:
    """writev(2) may write less than asked (a signal, a full disk on the way): the rest follows."""
    real_writev = os.writev

    def short_writev(fd: int, buffers: Sequence[bytes | memoryview]) -> int:
        first = memoryview(buffers[0])  # only half of the first buffer, as a short write would
        return real_writev(fd, [first[: max(1, first.nbytes // 2)]]) if first.nbytes else real_writev(fd, buffers)

    monkeypatch.setattr(clickhouse.os, "writev", short_writev)
    chunks = [bytes([i % 251]) * (i + 1) for i in range(2 * IOV_MAX + 3)]
    assert _written(_ranges(chunks)) == b"".join(chunks)
