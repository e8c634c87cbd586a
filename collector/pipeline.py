"""The request path as a pipeline of small functions: parse -> validate -> stamp -> (append) -> answer.

Pure functions over bytes and dicts; the HTTP handler in `collector.app` strings them together
and does the single I/O step (the spool append). Rules and their sources:
- body shape and response shape: docs/architecture.md `POST /collect`;
- clock policy: `ts` older than `max_event_age_s` (72 h) or more than `max_clock_skew_s`
  (5 min) ahead of `received_at` is rejected with its own reason (history goes through
  `clickstream import`);
- privacy: the raw IP is never stored; at most a keyed BLAKE2b hash whose key, a random salt,
  changes every UTC day and is deleted after it (Plausible's daily-salt scheme, collector.salt),
  so visitors cannot be linked across days by IP;
- consent: an event sent before consent (`"consent": "pending"`, no ids) gets its visitor and
  session ids from the `pending` hook (collector.cookieless) and loses the `consent` field.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from clickstream.core.errors import ClickstreamError, InvalidRequest, TooLarge
from clickstream.core.times import parse_ts
from collector.validation import EventError, EventValidator, RejectReason


def rejected_reason(exc: ClickstreamError) -> RejectReason:
    """The RejectReason a refused request is counted under (its error code)."""
    return RejectReason(exc.code)


def parse_body(body: bytes, max_batch_events: int) -> list[Any]:
    """Decode a request body into a list of candidate events.

    Accepts one JSON object or a JSON array of at most `max_batch_events` values.
    Raises InvalidRequest (400: malformed JSON, empty array) or TooLarge (413: too many events),
    with the RejectReason as error code.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc}", code=RejectReason.MALFORMED_JSON) from exc
    if isinstance(value, list):
        if not value:
            raise InvalidRequest("empty batch: send at least one event", code=RejectReason.EMPTY_BATCH)
        if len(value) > max_batch_events:
            raise TooLarge(f"batch of {len(value)} events exceeds the limit of {max_batch_events}; split it",
                           code=RejectReason.BATCH_TOO_LARGE)
        return value
    return [value]


def check_clock(ts_ms: int, received_at_ms: int, max_age_ms: int, max_skew_ms: int) -> RejectReason | None:
    """The clock policy: None when `ts_ms` lies in [received_at - max_age, received_at + max_skew]."""
    if ts_ms < received_at_ms - max_age_ms:
        return RejectReason.TS_TOO_OLD
    if ts_ms > received_at_ms + max_skew_ms:
        return RejectReason.TS_IN_FUTURE
    return None


@dataclasses.dataclass(slots=True)
class Outcome:
    """What the pipeline made of one request: spool records and per-event errors."""

    records: list[bytes]
    errors: list[EventError]
    rejected_entries: list[dict[str, Any]]


#: Spool record layout: one JSON object whose first two keys are `event_id` (36-character UUID) and
#: `user_agent`, then the client's fields and the stamps (flusher.enrich.record_keys reads the two at
#: fixed offsets; any other layout is still read, by a full parse).
RECORD_LAYOUT = ("event_id", "user_agent")


def process(
    events: list[Any],
    validator: EventValidator,
    *,
    received_at_ms: int,
    user_agent: str,
    ip_hash: str,
    max_age_ms: int,
    max_skew_ms: int,
    pending: Callable[[dict[str, Any]], None] | None = None,
) -> Outcome:
    """Validate and stamp each event; return spool payloads and errors (index, path, message).

    Stamping adds `received_at` (UTC epoch ms), `event_id` (UUID4) when absent, `user_agent`,
    `ip_hash` (when not empty), and normalises `ts` to epoch ms. An event with `"consent":
    "pending"` (schema: then without ids) is given to `pending`, which sets `anonymous_id` and
    `session_id`, and is spooled without `consent`; with no `pending` hook it is rejected
    (`consent_pending`). Accepted events are changed in place; rejected ones are left as sent
    (they go to rejected/ raw).
    """
    records: list[bytes] = []
    errors: list[EventError] = []
    rejected: list[dict[str, Any]] = []
    stamp: dict[str, Any] = {"received_at": received_at_ms}
    if ip_hash:
        stamp["ip_hash"] = ip_hash
    dumps = orjson.dumps
    # one validator call for a whole batch (the common, all-valid case); per event otherwise
    all_valid = len(events) > 1 and validator.all_valid(events)
    for index, event in enumerate(events):
        if all_valid or validator.is_valid(event):
            checked = _check_clock(event, index, received_at_ms, max_age_ms, max_skew_ms)
            if isinstance(checked, int) and "consent" in event and pending is None:
                checked = EventError(index, "/consent", "events without ids (consent pending) need the browser's "
                                     "request to derive them: send them to POST /collect", RejectReason.CONSENT_PENDING)
            if isinstance(checked, int):
                # TRICKY: event_id and user_agent lead every record (RECORD_LAYOUT): the flusher
                # slices them at fixed offsets instead of parsing the JSON. `ts` becomes epoch
                # ms in place, keeping its position.
                event["ts"] = checked
                if pending is not None and "consent" in event:  # "pending": the only value the schema allows
                    del event["consent"]
                    pending(event)
                event_id = event.get("event_id") or str(uuid.uuid4())
                records.append(dumps({"event_id": event_id, "user_agent": user_agent, **event, **stamp}))
                continue
            error = checked
        else:
            path, message = validator.first_error(event) or ("", "invalid event")
            error = EventError(index, path, message, RejectReason.SCHEMA_VIOLATION)
        errors.append(error)
        rejected.append({"reason": error.reason.value, "index": index, "path": error.path,
                         "message": error.message, "event": event})
    return Outcome(records, errors, rejected)


def _check_clock(event: dict[str, Any], index: int, received_at_ms: int, max_age_ms: int,
                 max_skew_ms: int) -> EventError | int:
    """The clock policy on a schema-valid event: its error, or its `ts` in epoch ms when it passes."""
    ts = event["ts"]
    if type(ts) is not int:
        try:
            ts = parse_ts(ts)
        except ValueError as exc:
            return EventError(index, "/ts", f"not a valid timestamp: {exc}", RejectReason.INVALID_TIMESTAMP)
    reason = check_clock(ts, received_at_ms, max_age_ms, max_skew_ms)
    if reason is RejectReason.TS_TOO_OLD:
        return EventError(index, "/ts", f"ts is more than {max_age_ms // 3_600_000} h before "
                          "received_at; load history with `clickstream import`", reason)
    if reason is RejectReason.TS_IN_FUTURE:
        return EventError(index, "/ts", f"ts is more than {max_skew_ms // 1000} s after "
                          "received_at (client clock ahead)", reason)
    return ts
