"""ClickHouse HTTP sessions (`session_id`): the database (USE) and settings (SET) kept between requests.

clickhouse-connect sends a session id on every request by default; Redash runs multi-statement
text in one. The rules are ClickHouse's (clickhouse.com/docs/interfaces/http "Using ClickHouse
sessions in the HTTP protocol").
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from reports.query_port.config import QueryPortConfig
from reports.query_port.errors import (
    INVALID_SESSION_TIMEOUT,
    SESSION_IS_LOCKED,
    SESSION_NOT_FOUND,
    USER_SESSION_LIMIT_EXCEEDED,
    error,
)


@dataclass
class Session:
    """State a ClickHouse HTTP session keeps between requests: the database (USE) and settings (SET)."""

    session_id: str
    timeout_s: float
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    last_used: float = 0.0
    busy: bool = False


class Sessions:
    """session_id -> Session, with ClickHouse's rules (docs/interfaces/http "Using ClickHouse sessions"):
    one query at a time per session (373 SESSION_IS_LOCKED), idle expiry after `session_timeout`
    (default 60 s, at most max_session_timeout: 374), `session_check=1` needs an existing session
    (372), and a bound on their number (700)."""

    def __init__(self, config: QueryPortConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def acquire(self, session_id: str, timeout: str | None, check: bool) -> Session:
        timeout_s = float(self.config.session_timeout_s)
        if timeout is not None:
            if not (timeout.isascii() and timeout.isdigit()):  # int() refuses "²"
                raise error(INVALID_SESSION_TIMEOUT, f"Invalid session timeout: '{timeout}'")
            if int(timeout) > self.config.max_session_timeout_s:
                raise error(INVALID_SESSION_TIMEOUT,
                             f"Session timeout '{timeout}' is larger than max_session_timeout: "
                             f"{self.config.max_session_timeout_s}. Maximum session timeout could be "
                             "modified in configuration file.")
            timeout_s = float(timeout)
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(session_id)
            if session is None:
                if check:
                    raise error(SESSION_NOT_FOUND, f"Session {session_id} not found")
                if len(self._sessions) >= self.config.max_sessions:
                    raise error(USER_SESSION_LIMIT_EXCEEDED, "Too many sessions: the query port keeps at most "
                                                              f"{self.config.max_sessions}")
                session = Session(session_id, timeout_s)
                self._sessions[session_id] = session
            if session.busy:
                raise error(SESSION_IS_LOCKED, f"Session {session_id} is locked by a concurrent client")
            session.busy = True
            session.timeout_s = timeout_s
            session.last_used = now
            return session

    def release(self, session: Session, close: bool) -> None:
        with self._lock:
            session.busy = False
            session.last_used = time.monotonic()
            if close:
                self._sessions.pop(session.session_id, None)

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if not s.busy and now - s.last_used > s.timeout_s]:
            del self._sessions[key]

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()

    def __len__(self) -> int:
        return len(self._sessions)
