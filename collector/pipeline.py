"""The request path as a pipeline of small functions: parse -> validate -> stamp -> (append) -> answer.

Pure functions over bytes and dicts; the HTTP handler in `collector.app` strings them together
and does the single I/O step (the spool append). Rules and their sources:
- body shape and response shape: shared/ARCHITECTURE.md `POST /collect`;
- clock policy (issue 2): `ts` older than `max_event_age_s` (72 h) or more than
  `max_clock_skew_s` (5 min) ahead of `received_at` is rejected with its own reason;
- privacy: the raw IP is never stored; at most a keyed BLAKE2b hash whose key changes every
  UTC day (Plausible's daily-salt scheme), so visitors cannot be linked across days by IP.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import time
import uuid
from typing import Any

import orjson

from collector.validation import EventError, EventValidator, RejectReason

_FRACTION = re.compile(r"\.(\d{6})\d+")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)


class RequestError(Exception):
    """A whole request refused: mapped to an HTTP status in one place (`collector.app`)."""

    def __init__(self, status: int, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def parse_body(body: bytes, max_batch_events: int) -> list[Any]:
    """Decode a request body into a list of candidate events.

    Accepts one JSON object or a JSON array of at most `max_batch_events` values.
    Raises RequestError: 400 malformed JSON or empty array, 413 for too many events.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, RejectReason.MALFORMED_JSON, f"malformed JSON: {exc}") from exc
    if isinstance(value, list):
        if not value:
            raise RequestError(400, RejectReason.EMPTY_BATCH, "empty batch: send at least one event")
        if len(value) > max_batch_events:
            raise RequestError(
                413, RejectReason.BATCH_TOO_LARGE,
                f"batch of {len(value)} events exceeds the limit of {max_batch_events}; split it",
            )
        return value
    return [value]


def parse_ts(value: Any) -> int:
    """Epoch milliseconds (UTC) of a schema-valid `ts`: integer ms, or an RFC 3339 string.

    An integral float (`1.7e12`, which JSON Schema counts as an integer) is taken as ms.
    Fractions beyond microseconds are truncated; the result is floored to the millisecond with
    integer arithmetic (no float rounding). Raises ValueError for a non-integral number, a
    string without a UTC offset, or one that matches the schema's pattern but is no real
    instant (month 13, hour 25, offset +99:00, ...).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number of milliseconds")
        return int(value)
    text = _FRACTION.sub(r".\1", str(value).upper())
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return (parsed - _EPOCH) // _ONE_MS


def check_clock(ts_ms: int, received_at_ms: int, max_age_ms: int, max_skew_ms: int) -> RejectReason | None:
    """The clock policy: None when `ts_ms` lies in [received_at - max_age, received_at + max_skew]."""
    if ts_ms < received_at_ms - max_age_ms:
        return RejectReason.TS_TOO_OLD
    if ts_ms > received_at_ms + max_skew_ms:
        return RejectReason.TS_IN_FUTURE
    return None


class IpHasher:
    """Keyed hash of client IPs with a key that rotates every UTC day; the raw IP is never kept.

    `hasher(ip)` -> 16 hex chars: BLAKE2b-64 of the IP keyed with BLAKE2b(day "YYYY-MM-DD",
    key=secret). Hashes of the current day are memoised in memory only (at most `cache_size`
    IPs, then the memo restarts; dropped at the UTC day change), since the same visitors send
    many requests.
    """

    def __init__(self, secret: bytes, cache_size: int = 65536) -> None:
        self._secret = secret
        self._day = ""
        self._key = b""
        self._epoch_day = -1
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    def __call__(self, ip: str, now: dt.datetime | None = None) -> str:
        if now is not None:
            return self._hash(ip, now.strftime("%Y-%m-%d"))
        epoch_day = int(time.time()) // 86400
        if epoch_day != self._epoch_day:
            self._cache = {}
            self._epoch_day = epoch_day
        cached = self._cache.get(ip)
        if cached is None:
            day = (_EPOCH + dt.timedelta(days=epoch_day)).strftime("%Y-%m-%d")
            if len(self._cache) >= self._cache_size:
                self._cache = {}
            cached = self._cache[ip] = self._hash(ip, day)
        return cached

    def _hash(self, ip: str, day: str) -> str:
        if day != self._day:
            self._key = hashlib.blake2b(day.encode(), key=self._secret[:64], digest_size=32).digest()
            self._day = day
        return hashlib.blake2b(ip.encode(), key=self._key, digest_size=8).hexdigest()


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
) -> Outcome:
    """Validate and stamp each event; return spool payloads and errors (index, path, message).

    Stamping adds `received_at` (UTC epoch ms), `event_id` (UUID4) when absent, `user_agent`,
    `ip_hash` (when not empty), and normalises `ts` to epoch ms. Accepted events are changed in
    place; rejected ones are left as sent (they go to rejected/ raw).
    """
    records: list[bytes] = []
    errors: list[EventError] = []
    rejected: list[dict[str, Any]] = []
    oldest, newest = received_at_ms - max_age_ms, received_at_ms + max_skew_ms
    stamp: dict[str, Any] = {"received_at": received_at_ms}
    if ip_hash:
        stamp["ip_hash"] = ip_hash
    dumps = orjson.dumps
    # one validator call for a whole batch (the common, all-valid case); per event otherwise
    all_valid = len(events) > 1 and validator.all_valid(events)
    for index, event in enumerate(events):
        if all_valid or validator.is_valid(event):
            ts = event["ts"]
            # fast path, same result as the general one below: integer ms inside the clock
            # window and a client event_id (what beacon.js sends); the stamp keeps key order
            if type(ts) is int and oldest <= ts <= newest and "event_id" in event:
                # TRICKY: event_id and user_agent lead every record (RECORD_LAYOUT): the flusher
                # slices them at fixed offsets instead of parsing the JSON.
                records.append(dumps({"event_id": event["event_id"], "user_agent": user_agent, **event, **stamp}))
                continue
            error = _check_and_stamp(event, index, received_at_ms, user_agent, ip_hash, max_age_ms, max_skew_ms)
            if error is None:
                records.append(dumps(event))
                continue
        else:
            path, message = validator.first_error(event) or ("", "invalid event")
            error = EventError(index, path, message, RejectReason.SCHEMA_VIOLATION)
        errors.append(error)
        rejected.append({"reason": error.reason.value, "index": index, "path": error.path,
                         "message": error.message, "event": event})
    return Outcome(records, errors, rejected)


def _check_and_stamp(event: dict[str, Any], index: int, received_at_ms: int, user_agent: str, ip_hash: str,
                     max_age_ms: int, max_skew_ms: int) -> EventError | None:
    """Clock policy and stamping of one schema-valid event; the error, or None once stamped."""
    try:
        ts_ms = parse_ts(event["ts"])
    except ValueError as exc:
        return EventError(index, "/ts", f"not a valid timestamp: {exc}", RejectReason.INVALID_TIMESTAMP)
    reason = check_clock(ts_ms, received_at_ms, max_age_ms, max_skew_ms)
    if reason is RejectReason.TS_TOO_OLD:
        return EventError(index, "/ts", f"ts is more than {max_age_ms // 3_600_000} h before "
                          "received_at; load history with `clickstream import`", reason)
    if reason is RejectReason.TS_IN_FUTURE:
        return EventError(index, "/ts", f"ts is more than {max_skew_ms // 1000} s after "
                          "received_at (client clock ahead)", reason)
    stamped = {"event_id": event.get("event_id") or str(uuid.uuid4()), "user_agent": user_agent, **event,
               "ts": ts_ms, "received_at": received_at_ms}
    if ip_hash:
        stamped["ip_hash"] = ip_hash
    event.clear()
    event.update(stamped)  # in place, keeping the record layout (event_id, user_agent first)
    return None
