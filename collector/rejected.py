"""Dead letters of the collector: every rejected event kept with its reason, bounded and rotated.

Files `<data-dir>/rejected/rejected-<microseconds>.jsonl`, one JSON object a line:
`{"received_at": ms, "reason": str, "index": int|null, "path": str, "message": str,
"event": <raw event>|null, "body": <raw body text>|null}`, plus, for an event of `POST /collect`,
the request's `"user_agent"` and `"ip_hash"` (when there is one), which `clickstream replay-rejected`
stamps a replayed event with (collector/replay.py). An event that orjson cannot
re-encode (nested deeper than its 255-level limit, while decoding allows 1024) is kept as
`"event": null` with the request's raw `body` instead. A file rotates at `file_max_bytes`;
the oldest files are deleted once all exceed `max_bytes`, and every event deleted that way is
counted (`rejected_evicted_total`), so nothing vanishes without a number.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson


class RejectedStore:
    """Append-only, size-bounded JSONL store of rejected events."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        file_max_bytes: int = 8 * 1024 * 1024,
        on_evict: Callable[[int], None] | None = None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.file_max_bytes = min(file_max_bytes, max_bytes)
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._fh: Any = None
        self._size = 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, entries: list[dict[str, Any]], body: bytes | None = None) -> None:
        """Append entries (each already holding reason, message, event) stamped with `received_at`.

        `body` is the request's raw bytes, stored in place of any event that cannot be encoded.
        All entries are written when it returns; raises OSError (ENOSPC, EIO) after cutting off a
        partial write, so the file never holds half of a call's entries.
        """
        if not entries:
            return
        now_ms = int(time.time() * 1000)
        lines = []
        for entry in entries:
            try:
                lines.append(orjson.dumps({"received_at": now_ms, **entry}))
            except orjson.JSONEncodeError:
                text = body.decode("utf-8", "replace") if body is not None else None
                lines.append(orjson.dumps({"received_at": now_ms, **entry, "event": None, "body": text}))
        data = b"\n".join(lines) + b"\n"
        with self._lock:
            if self._fh is None or self._size + len(data) > self.file_max_bytes:
                self._rotate()
            try:  # unbuffered: all of it reaches the file now, or none of it stays (ENOSPC, EIO)
                view = memoryview(data)
                while view:
                    view = view[self._fh.write(view):]
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fh.fileno(), self._size)
                raise
            self._size += len(data)

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
        name = f"rejected-{time.time_ns() // 1000:017d}.jsonl"
        self._fh = open(self.directory / name, "ab", buffering=0)  # noqa: SIM115 - kept open across calls
        self._size = 0
        files = sorted(self.directory.glob("rejected-*.jsonl"))
        total = sum(f.stat().st_size for f in files)
        for old in files[:-1]:
            if total <= self.max_bytes - self.file_max_bytes:
                break
            size = old.stat().st_size
            lines = old.read_bytes().count(b"\n")
            os.unlink(old)
            total -= size
            if self._on_evict is not None:
                self._on_evict(lines)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def read_all(self) -> Iterator[dict[str, Any]]:
        """Every kept entry, oldest first (for audits and tests)."""
        for path in sorted(self.directory.glob("rejected-*.jsonl")):
            for line in path.read_bytes().splitlines():
                if line:
                    yield orjson.loads(line)
