"""Daily salts and the keyed hashes made with them: IP hashes and cookieless visitor ids.

Plausible's scheme (plausible.io/data-policy, "How we count unique users without cookies"): a
random salt per day, used to hash what identifies a visitor, deleted when the day is over, so a
hash of an earlier day can no longer be linked to an IP address, not even by whoever holds the
data and the code. Here:
- `DailySalt`: 32 random bytes per UTC day, kept in memory and in `<salt dir>/<YYYY-MM-DD>.salt`
  (0600) so that a restarted collector, or a second one on the same machine, uses the same salt
  (the same visitor keeps the same id all day). The salt directory is outside the data directory
  by default (`Settings.resolved_salt_dir`): a copy of the data never holds a salt. When a day's
  salt is first needed, the files of earlier days are deleted.
- `DailyHasher`: BLAKE2b of a string keyed with the salt of the current UTC day, hex.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from clickstream.core.times import EPOCH

SALT_BYTES = 32


def key_file(path: Path, nbytes: int = SALT_BYTES) -> bytes:
    """The random key stored at `path`, created (0600, fsynced) when missing or shorter than `nbytes`.

    Written to a temporary file and linked into place, so a crash never leaves a short or empty
    key (an empty key would make the hash unkeyed, i.e. brute-forceable over IPv4), and two
    processes creating it at once agree on one value: the second link fails and that process
    reads the winner's key. Raises OSError when the directory cannot be written.
    """
    with contextlib.suppress(FileNotFoundError):
        value = path.read_bytes()
        if len(value) >= nbytes:
            return value
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    value = secrets.token_bytes(nbytes)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        existing = path.read_bytes()
        if len(existing) >= nbytes:
            value = existing
        else:  # a short key left by an old crash: replaced
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return value


def utc_day(now: dt.datetime) -> str:
    """`YYYY-MM-DD` of `now` in UTC."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%d")


class DailySalt:
    """`salt(day)` -> the 32 random bytes of UTC day `day` ("YYYY-MM-DD"), shared through `directory`.

    Asking for a day's salt the first time deletes the salt files of earlier days. Raises OSError
    when the directory cannot be written.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._day = ""
        self._salt = b""

    def __call__(self, day: str) -> bytes:
        if day != self._day:
            salt = key_file(self.directory / f"{day}.salt")
            for old in self.directory.glob("*.salt"):
                if old.stem < day:
                    with contextlib.suppress(FileNotFoundError):
                        old.unlink()
            self._day, self._salt = day, salt
        return self._salt


class DailyHasher:
    """`hasher(value)` -> hex BLAKE2b of `value` keyed with the salt of the current UTC day.

    `salt(day)` gives a day's key (a `DailySalt`; tests pass a function). `digest_size` bytes give
    2 * digest_size hex characters. Hashes of the current day are memoised in memory only (at
    most `cache_size` values, then the memo restarts; dropped at the UTC day change), since the
    same visitors send many requests. `now` hashes for another time's day (tests).
    """

    def __init__(self, salt: Callable[[str], bytes], digest_size: int = 8, cache_size: int = 65536) -> None:
        self._salt = salt
        self._digest_size = digest_size
        self._epoch_day = -1
        self._day = ""
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    def __call__(self, value: str, now: dt.datetime | None = None) -> str:
        if now is not None:
            return self._hash(value, utc_day(now))
        epoch_day = int(time.time()) // 86400
        if epoch_day != self._epoch_day:
            self._cache = {}
            self._epoch_day = epoch_day
            self._day = (EPOCH + dt.timedelta(days=epoch_day)).strftime("%Y-%m-%d")
        cached = self._cache.get(value)
        if cached is None:
            if len(self._cache) >= self._cache_size:
                self._cache = {}
            cached = self._cache[value] = self._hash(value, self._day)
        return cached

    def _hash(self, value: str, day: str) -> str:
        return hashlib.blake2b(value.encode(), key=self._salt(day), digest_size=self._digest_size).hexdigest()
