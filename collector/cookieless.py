"""Visitor and session ids for events sent before consent (`"consent": "pending"`, no ids).

beacon.js with `data-consent="required"` stores nothing until the visitor consents, so it has no
id to send; the collector derives them (docs/architecture.md "Consent and cookieless ids"):
- visitor: `cookieless-` + BLAKE2b-96 of (site_id, client IP, User-Agent) keyed with the daily
  salt (collector.salt; Plausible's scheme, PostHog's cookieless server hash). Stable for one
  site, browser and network during a UTC day; another site or another day gives another id.
- session: kept per visitor in memory, like PostHog's cookieless sessions (kept in Redis there):
  a new one when the visitor's previous event is more than 30 minutes older than this one, or
  when the event carries a campaign (`utm`) other than the session's, the same rules as the
  beacon's own sessions. A new id is a random UUID.

Trade-offs, by design: the session table lives in one collector process. A restart (or a second
collector process behind a load balancer) starts new sessions for visitors who were in one; their
visitor id stays the same (the salt is shared through its file). Visitors behind one NAT with the
same browser build share an id (as with Plausible). At the UTC day change the salt, hence the
visitor id, changes and a new session starts. The table holds at most `max_visitors` entries;
past that the least recently seen visitor's session is forgotten (counted in
`clickstream_cookieless_sessions_evicted_total`), which only splits that visitor's session.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from collector.salt import DailyHasher

VISITOR_PREFIX = "cookieless-"
SESSION_IDLE_MS = 30 * 60_000


@dataclasses.dataclass(slots=True)
class _Session:
    session_id: str
    last_ts: int  # the latest event time seen, epoch ms
    utm: dict[str, Any] | None
    seen_at: int  # when the collector last saw the visitor, epoch ms


class CookielessIds:
    """Fills `anonymous_id` and `session_id` of pending-consent events (the `pending` hook of
    collector.pipeline.process) from the request's IP and User-Agent."""

    def __init__(self, hasher: DailyHasher, *, max_visitors: int = 100_000, idle_ms: int = SESSION_IDLE_MS,
                 on_evict: Callable[[], None] | None = None) -> None:
        self.hasher = hasher
        self.max_visitors = max_visitors
        self.idle_ms = idle_ms
        self._on_evict = on_evict
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently seen first

    def __len__(self) -> int:
        return len(self._sessions)

    def visitor_id(self, site_id: str, ip: str, user_agent: str) -> str:
        """The cookieless visitor id of (site, IP, User-Agent) today."""
        return VISITOR_PREFIX + self.hasher(f"{site_id}\x00{ip}\x00{user_agent}")

    def assign(self, event: dict[str, Any], ip: str, user_agent: str, received_at_ms: int) -> None:
        """Set `event["anonymous_id"]` and `event["session_id"]`; `event["ts"]` must be epoch ms."""
        visitor = self.visitor_id(event["site_id"], ip, user_agent)
        ts: int = event["ts"]
        utm = event.get("utm") or None
        current = self._sessions.get(visitor)
        if (current is None or ts > current.last_ts + self.idle_ms or ts < current.last_ts - self.idle_ms
                or (utm is not None and utm != current.utm)):
            current = _Session(str(uuid.uuid4()), ts, utm, received_at_ms)
            self._sessions[visitor] = current
        else:
            current.last_ts = max(current.last_ts, ts)
            current.seen_at = received_at_ms
        self._sessions.move_to_end(visitor)
        event["anonymous_id"] = visitor
        event["session_id"] = current.session_id
        self._expire(received_at_ms)

    def _expire(self, now_ms: int) -> None:
        """Forget sessions idle for longer than `idle_ms` (of arrival time), then the least recently
        seen beyond `max_visitors` (counted)."""
        sessions = self._sessions
        while sessions:
            oldest = next(iter(sessions.values()))
            if oldest.seen_at >= now_ms - self.idle_ms and len(sessions) <= self.max_visitors:
                return
            if oldest.seen_at >= now_ms - self.idle_ms and self._on_evict is not None:
                self._on_evict()
            sessions.popitem(last=False)
