"""Browser logins of the query port: the dashboard's login form trades the port's credentials for a
session cookie, which the port then accepts in place of HTTP Basic (reports/dashboard).

A login is a random token (`secrets.token_urlsafe`, 256 bits) kept in memory for `ttl_s` seconds
after it was made; a restart of `serve` logs everybody out. The cookie is `Secure; HttpOnly;
SameSite=Strict; Path=/`: scripts cannot read it, and no other site can make the browser send it
(the port is read only, and a cross-site POST carries no cookie). Browsers treat http://127.0.0.1
and http://localhost as secure origins, so `Secure` does not break the default local setup.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from typing import Final

#: Name of the session cookie the dashboard's login form sets.
COOKIE_NAME: Final = "clickstream_dashboard"


class Logins:
    """token -> expiry (monotonic s). At most `max_logins`: the oldest login is dropped first."""

    def __init__(self, ttl_s: float = 8 * 3600.0, max_logins: int = 1000) -> None:
        if ttl_s <= 0 or max_logins < 1:
            raise ValueError("ttl_s must be > 0 and max_logins >= 1")
        self.ttl_s = ttl_s
        self.max_logins = max_logins
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def create(self) -> str:
        """A new login token, valid for ttl_s."""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._purge(now)
            while len(self._expiry) >= self.max_logins:
                del self._expiry[next(iter(self._expiry))]
            self._expiry[token] = now + self.ttl_s
        return token

    def valid(self, token: str | None) -> bool:
        """Whether `token` is a live login (constant-time comparison against each live token)."""
        if not token:
            return False
        now = time.monotonic()
        with self._lock:
            self._purge(now)
            found = False
            for known in self._expiry:
                found |= hmac.compare_digest(known.encode(), token.encode())
            return found

    def revoke(self, token: str | None) -> None:
        """Forget a login (logout). Idempotent."""
        if token:
            with self._lock:
                self._expiry.pop(token, None)

    def __len__(self) -> int:
        with self._lock:
            self._purge(time.monotonic())
            return len(self._expiry)

    def _purge(self, now: float) -> None:
        for token in [t for t, expiry in self._expiry.items() if expiry <= now]:
            del self._expiry[token]


def has_credentials(headers_present: bool, params: list[tuple[str, str]]) -> bool:
    """Whether a request names credentials itself (then the cookie is not looked at)."""
    return headers_present or any(name in ("user", "password") for name, _ in params)
