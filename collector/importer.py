"""`clickstream import FILE`: historical events (JSONL) through the collector's validation into the spool.

Each line is one event (the JSON Schema of POST /collect), or an envelope
`{"event": {...}, "user_agent": "...", "received_at": ms}` that keeps what a collector would have
stamped. Lines go through the same validation as `/collect` (schemas/event.schema.json) but not
the 72 h clock policy: history is what import is for. Still refused: timestamps before 2000-01-01
(`ts_too_old`) or more than `max_clock_skew_s` ahead of now (`ts_in_future`), the range `events`
accepts; events without ids (`"consent": "pending"`, `consent_pending`), whose ids only a browser's
request can give. Every refused line is kept in `<data-dir>/rejected/` with its reason and line number.

Accepted events become sealed spool segments written beside the collector's (temp file, fsync,
atomic rename to `<id>.seg`), so an import works whether or not `serve` is running: a running
flusher picks them up at once, else the next `serve` or `flusher` does. `event_id` defaults to a
UUID v5 of the line's bytes, so importing the same file twice stores each event once (the
flusher drops repeated event ids it still remembers; see flusher.loop).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from clickstream.core.settings import Settings
from clickstream.core.spool import write_sealed_segment
from clickstream.core.times import MIN_TS_MS, parse_ts
from collector.rejected import RejectedStore
from collector.validation import EventValidator, RejectReason

IMPORT_NAMESPACE = uuid.UUID("6f1c7f8e-3b7a-4c1e-9a53-1f2d3c4b5a69")
DEFAULT_USER_AGENT = "Mozilla/5.0 (compatible; clickstream-import)"


@dataclasses.dataclass
class ImportResult:
    """What an import did: accepted events, rejections by reason, segments written."""

    accepted: int = 0
    rejected: Counter[str] = dataclasses.field(default_factory=Counter)
    segments: list[str] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": dict(self.rejected), "segments": len(self.segments)}


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                yield number, line.strip()


def import_file(settings: Settings, path: Path, *, user_agent: str = DEFAULT_USER_AGENT,
                segment_events: int = 50_000) -> ImportResult:
    """Validate and spool every event of a JSONL file. Raises OSError when the file cannot be read."""
    validator = EventValidator()
    rejected = RejectedStore(settings.rejected_dir, max_bytes=settings.rejected_max_bytes,
                             file_max_bytes=settings.rejected_file_max_bytes)
    spool = settings.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    result = ImportResult()
    buffer: list[bytes] = []
    now_ms = int(time.time() * 1000)
    max_ms = now_ms + settings.max_clock_skew_s * 1000

    def reject(number: int, reason: RejectReason, path_: str, message: str, event: Any) -> None:
        result.rejected[reason.value] += 1
        rejected.add([{"reason": reason.value, "index": number, "path": path_, "message": f"line {number}: {message}",
                       "event": event, "source": str(path)}])

    for number, line in _lines(path):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            reject(number, RejectReason.MALFORMED_JSON, "", f"malformed JSON: {exc}", line.decode("utf-8", "replace"))
            continue
        envelope = isinstance(value, dict) and isinstance(value.get("event"), dict)
        event = value["event"] if envelope else value
        first = validator.first_error(event)
        if first is not None:
            reject(number, RejectReason.SCHEMA_VIOLATION, first[0], first[1], event)
            continue
        try:
            ts_ms = parse_ts(event["ts"])
        except ValueError as exc:
            reject(number, RejectReason.INVALID_TIMESTAMP, "/ts", str(exc), event)
            continue
        if ts_ms < MIN_TS_MS:
            reject(number, RejectReason.TS_TOO_OLD, "/ts", "ts before 2000-01-01", event)
            continue
        if ts_ms > max_ms:
            reject(number, RejectReason.TS_IN_FUTURE, "/ts", "ts in the future", event)
            continue
        if "consent" in event:  # ids derived from the browser's IP and User-Agent: only POST /collect has them
            reject(number, RejectReason.CONSENT_PENDING, "/consent", "events without ids (consent pending) "
                   "cannot be imported: give them anonymous_id and session_id", event)
            continue
        stamped = {
            "event_id": event.get("event_id") or str(uuid.uuid5(IMPORT_NAMESPACE, line.decode("utf-8", "replace"))),
            "user_agent": str(value.get("user_agent", user_agent)) if envelope else user_agent,
            **event,
            "ts": ts_ms,
            "received_at": int(value.get("received_at", now_ms)) if envelope else now_ms,
        }
        buffer.append(orjson.dumps(stamped))
        result.accepted += 1
        if len(buffer) >= segment_events:
            result.segments.append(write_sealed_segment(spool, buffer))
            buffer = []
    if buffer:
        result.segments.append(write_sealed_segment(spool, buffer))
    rejected.close()
    return result
