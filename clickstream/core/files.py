"""Small durable-file helpers shared by the spool, the importer and the stitcher's outbox."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that files created, renamed or deleted in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on the filesystem of `path` (statvfs).
    Raises OSError when `path` cannot be examined."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def probe_write(directory: Path, size: int) -> str:
    """Write and delete a `size`-byte file in `directory`; "" when that worked, else the OSError's text."""
    path = directory / f".probe-{os.getpid()}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(bytes(size))
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as exc:
        return str(exc)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return ""


class WriteHealth:
    """Whether a directory still takes writes, for `/readyz` (RELIABILITY.md "3. Overload and disk").

    Writers report each failure (`failed`) and success (`ok`); `check` answers (ok, detail): not ok
    while fewer than `need_bytes` are free, or while the last write failed and a probe write of
    `need_bytes` still fails (the probe clears the failure once space is back, so readiness returns
    without waiting for traffic that a load balancer no longer sends).
    """

    def __init__(self, directory: Path, need_bytes: int) -> None:
        self.directory = directory
        self.need_bytes = need_bytes
        self.last_error = ""

    def failed(self, exc: BaseException) -> None:
        self.last_error = str(exc) or type(exc).__name__

    def ok(self) -> None:
        if self.last_error:
            self.last_error = ""

    def check(self) -> tuple[bool, str]:
        if not os.access(self.directory, os.W_OK):
            return False, f"{self.directory} not writable"
        try:
            free = free_bytes(self.directory)
        except OSError as exc:
            return False, f"{self.directory}: {exc}"
        if free < self.need_bytes:
            return False, f"{self.directory}: {free} bytes free, {self.need_bytes} needed"
        if self.last_error:
            error = probe_write(self.directory, self.need_bytes)
            if error:
                return False, f"{self.directory}: last write failed ({self.last_error}); probe: {error}"
            self.last_error = ""
        return True, f"{self.directory}: {free} bytes free"
