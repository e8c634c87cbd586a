"""A spool writer process for the crash test (tests/integration/test_spool.py); not a test itself.

`python spool_writer.py DIR FSYNC_INTERVAL_MS SEGMENT_MAX_BYTES` appends records
`payload(0)`, `payload(1)`, ... one per `append` until killed, and prints `<i> <segment_id> <end>`
(flushed) once record i is durable: with interval 0 right after its own `sync_to`, otherwise
when the group-commit thread's `durable_position()` has moved past it.
"""

from __future__ import annotations

import hashlib
import sys
from collections import deque
from pathlib import Path

from clickstream.core.spool import SpoolPosition, SpoolWriter


def payload(i: int) -> bytes:
    """Record i's content: its index plus filler derived from it (so any damage is detectable)."""
    filler = hashlib.sha256(str(i).encode()).hexdigest() * (1 + i % 7)
    return f"{i:09d}:{filler}".encode()


def main() -> None:
    directory, interval_ms, segment_max = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    writer = SpoolWriter(directory, fsync_interval_ms=interval_ms, segment_max_bytes=segment_max,
                         segment_max_age_ms=60_000).open()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    pending: deque[tuple[int, SpoolPosition]] = deque()
    i = 0
    while True:
        position = writer.append([payload(i)])
        if interval_ms == 0:
            writer.sync_to(position)
            out.write(f"{i} {position.segment_id} {position.offset}\n")
            out.flush()
        else:
            pending.append((i, position))
            durable = writer.durable_position()
            while pending and pending[0][1] <= durable:
                j, pos = pending.popleft()
                out.write(f"{j} {pos.segment_id} {pos.offset}\n")
            out.flush()
        i += 1


if __name__ == "__main__":
    main()
