"""The stitcher's durable outbox: `<data-dir>/outbox/outbox.sqlite3` (stdlib sqlite3).

One row per lead_id: the canonical request and its fingerprint (for 200-or-409 on a repeat), the
event's exact JSON bytes, and the delivery state of each relay target (`clickhouse`, `webhook`).

Durability: WAL journal with `synchronous=FULL`, so `put` returns only after the commit is fsynced
(SQLite "PRAGMA synchronous": FULL syncs the WAL on every commit; the unix VFS also fsyncs the
directory when it creates the WAL). The 201 is sent after `put`: an acknowledged lead survives
SIGKILL and power loss, and the relay delivers it after the restart (transactional outbox).
The outbox keeps every lead forever: it is the idempotency record (a repeat months later still
gets the original event). At lead volumes (not page-view volumes) that is small.

Thread-safe: one connection, serialised by a lock (request threads and relay lanes share it).
"""

from __future__ import annotations

import dataclasses
import enum
import sqlite3
import threading
import time
from pathlib import Path

from clickstream.core.errors import Unavailable
from clickstream.core.files import WriteHealth, fsync_dir

FILENAME = "outbox.sqlite3"
#: Free bytes readiness asks for: a lead (request + event, each bounded by the request size) and WAL pages.
NEED_BYTES = 256 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (
    lead_id          TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    request          BLOB NOT NULL,
    event            BLOB NOT NULL,
    created_ms       INTEGER NOT NULL,
    clickhouse_state TEXT NOT NULL,
    clickhouse_ms    INTEGER,
    webhook_state    TEXT NOT NULL,
    webhook_ms       INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS leads_clickhouse_pending ON leads (clickhouse_state, created_ms);
CREATE INDEX IF NOT EXISTS leads_webhook_pending ON leads (webhook_state, created_ms);
"""


class Target(enum.StrEnum):
    """Where the relay delivers an event; each has a `<target>_state` column."""

    CLICKHOUSE = "clickhouse"
    WEBHOOK = "webhook"


class State(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # refused for good (ClickHouse data error, webhook 4xx): kept, counted, logged
    NONE = "none"  # no webhook configured when the lead was stitched


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One stitched lead as the outbox holds it."""

    lead_id: str
    event_id: str
    fingerprint: str
    request: bytes
    event: bytes
    created_ms: int


def _now_ms() -> int:
    return int(time.time() * 1000)


class Outbox:
    """Durable lead_id -> (request fingerprint, exact event bytes, delivery states)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILENAME
        self.health = WriteHealth(directory, NEED_BYTES)  # readiness: room for a lead, no failed write
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        fsync_dir(directory)  # the database file's own directory entry

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, lead_id: str) -> Entry | None:
        """The entry of `lead_id`, or None when it was never stitched."""
        with self._lock:
            row = self._db.execute(
                "SELECT lead_id, event_id, fingerprint, request, event, created_ms FROM leads WHERE lead_id = ?",
                (lead_id,),
            ).fetchone()
        return None if row is None else Entry(row[0], row[1], row[2], bytes(row[3]), bytes(row[4]), row[5])

    def put(self, entry: Entry, *, webhook: bool) -> tuple[Entry, bool]:
        """Insert `entry` unless its lead_id exists; return (the stored entry, created).

        Durable (fsynced) when it returns. `webhook`: the event also awaits webhook delivery.
        Raises Unavailable (503 + Retry-After) when SQLite cannot write it (a full disk, an I/O error).
        Two concurrent puts of one lead_id: the first wins, the second gets it with created=False.
        """
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT INTO leads (lead_id, event_id, fingerprint, request, event, created_ms, clickhouse_state, "
                    "webhook_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (lead_id) DO NOTHING",
                    (entry.lead_id, entry.event_id, entry.fingerprint, entry.request, entry.event, entry.created_ms,
                     State.PENDING.value, (State.PENDING if webhook else State.NONE).value),
                )
            except sqlite3.OperationalError as exc:  # disk full, I/O error: nothing was committed
                self.health.failed(exc)
                raise Unavailable(f"the outbox cannot take writes ({exc}); nothing was emitted, retry",
                                  code="outbox_unavailable") from None
            self.health.ok()
            created = cursor.rowcount == 1
        if created:
            return entry, True
        stored = self.get(entry.lead_id)
        if stored is None:  # pragma: no cover - rows are never deleted
            raise RuntimeError(f"outbox lost lead {entry.lead_id!r}")
        return stored, False

    def pending(self, target: Target, limit: int = 100) -> list[Entry]:
        """Entries awaiting delivery to `target`, oldest first."""
        column = f"{Target(target).value}_state"
        with self._lock:
            rows = self._db.execute(
                f"SELECT lead_id, event_id, fingerprint, request, event, created_ms FROM leads "
                f"WHERE {column} = ? ORDER BY created_ms, lead_id LIMIT ?",
                (State.PENDING.value, limit),
            ).fetchall()
        return [Entry(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]), r[5]) for r in rows]

    def count(self, target: Target, state: State = State.PENDING) -> int:
        column = f"{Target(target).value}_state"
        with self._lock:
            row = self._db.execute(f"SELECT count(*) FROM leads WHERE {column} = ?",
                                   (State(state).value,)).fetchone()
        return int(row[0])

    def mark(self, lead_id: str, target: Target, state: State, error: str = "") -> None:
        """Record the outcome of a delivery of `lead_id` to `target` (durably)."""
        name = Target(target).value
        with self._lock:
            self._db.execute(
                f"UPDATE leads SET {name}_state = ?, {name}_ms = ?, last_error = ? WHERE lead_id = ?",
                (State(state).value, _now_ms(), error[:2000], lead_id),
            )

    def note_attempt(self, lead_id: str, error: str) -> None:
        """Count a failed delivery attempt and keep its error (for inspection with sqlite3)."""
        with self._lock:
            self._db.execute("UPDATE leads SET attempts = attempts + 1, last_error = ? WHERE lead_id = ?",
                             (error[:2000], lead_id))
