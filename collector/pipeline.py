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
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from clickstream.core.errors import ClickstreamError, InvalidRequest, TooLarge
from clickstream.core.times import parse_ts
from clickstream.core.useragent import agent_fragment
from collector.schemas import EventSchemas
from collector.validation import EventError, RejectReason


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
    """What the pipeline made of one request: the accepted events as JSON objects (`records`) with
    their event ids, the request's `stamp` that completes each into an `events_ingest` row (the
    spool's block record, clickstream.core.spool), per-event errors, and the accepted events by the
    schema version they were sent in (`versions`: version -> count)."""

    records: list[bytes]
    ids: list[bytes]
    stamp: bytes
    errors: list[EventError]
    rejected_entries: list[dict[str, Any]]
    versions: dict[str, int] = dataclasses.field(default_factory=dict)

    def rows(self) -> list[bytes]:
        """The `events_ingest` rows: each record completed with the stamp (what the spool stores,
        before the position)."""
        return [ingest_row(record, self.stamp) for record in self.records]


def request_stamp(received_at_ms: int, user_agent: str, ip_hash: str) -> bytes:
    """What the collector adds to every event of one request, as JSON object members with a
    leading comma: `,"received_at":<ms>,"user_agent":"…",<User-Agent fields>[,"ip_hash":"…"]`.

    The User-Agent fields (browser, os, device type, bot flag: clickstream.core.useragent) are
    memoised per User-Agent, so a request pays one look-up; `ip_hash` is left out when empty.
    """
    stamp = b',"received_at":%d,' % received_at_ms + agent_fragment(user_agent)
    if ip_hash:
        stamp += b',"ip_hash":"' + ip_hash.encode() + b'"'
    return stamp


def ingest_row(record: bytes, stamp: bytes) -> bytes:
    """One `events_ingest` row: an event's JSON object (compact, one line) with `stamp` appended."""
    return record[:-1] + stamp + b"}"


def event_id_key(event_id: str) -> bytes:
    """The spool's and the flusher's key of an event id: its canonical text, lower case (ASCII)."""
    return event_id.lower().encode()


def process(
    events: list[Any],
    schemas: EventSchemas,
    *,
    received_at_ms: int,
    user_agent: str,
    ip_hash: str,
    max_age_ms: int,
    max_skew_ms: int,
    pending: Callable[[dict[str, Any]], None] | None = None,
    sites: Mapping[str, frozenset[str]] | None = None,
    origin: str | None = None,
) -> Outcome:
    """Validate and stamp each event; return the accepted ones as JSON objects with their ids and
    the request's stamp (`Outcome.rows` joins them), and the errors.

    Validation (collector.schemas): each event against the schema version it names (the oldest it
    satisfies when none; a version not accepted is `unsupported_schema_version`) and its custom
    props schema, a whole request in one call when its events name one version; an accepted event
    is upcast to the current shape and loses `schema`. `Outcome.versions` counts them by version.

    Stamping: `event_id` (UUID4) when absent and `ts` normalised to epoch ms, in the event; then
    `request_stamp` (received_at in UTC epoch ms, the User-Agent and its fields, `ip_hash` when
    not empty) for the whole request. With `sites` (the allowlist CLICKSTREAM_SITES: site_id -> its
    browser origins), an event of another site is rejected (`unknown_site`), and one sent by a browser
    (`origin`, the request's Origin header) from an origin not listed for its site too
    (`origin_not_allowed`); requests without an Origin (server to server) pass. An event with
    `"consent": "pending"` (schema: then without ids) is given to `pending`, which sets
    `anonymous_id` and `session_id`, and is spooled without `consent`; with no `pending` hook it is
    rejected (`consent_pending`). Accepted events are changed in place; rejected ones are left as
    sent (they go to rejected/ raw).
    """
    records: list[bytes] = []
    ids: list[bytes] = []
    errors: list[EventError] = []
    rejected: list[dict[str, Any]] = []
    dumps = orjson.dumps
    oldest, newest = received_at_ms - max_age_ms, received_at_ms + max_skew_ms
    # one validator call for a whole batch (the common, all-valid case); per event otherwise
    batch = schemas.batch_version(events) if len(events) > 1 else None
    check = schemas.check
    custom = bool(schemas.custom)  # custom props schemas are checked per event
    versions: dict[str, int] = {}
    for index, event in enumerate(events):
        error: EventError
        version = batch if batch is not None and not custom else check(event, batch is not None)
        if not isinstance(version, tuple):
            ts = event["ts"]
            checked: EventError | int = ts
            if type(ts) is not int or not oldest <= ts <= newest:  # else the common case: ms, in the window
                checked = _check_clock(event, index, received_at_ms, max_age_ms, max_skew_ms)
            if sites is not None and isinstance(checked, int):
                checked = _check_site(event, index, sites, origin, checked)
            if isinstance(checked, int) and "consent" in event and pending is None:
                checked = EventError(index, "/consent", "events without ids (consent pending) need the browser's "
                                     "request to derive them: send them to POST /collect", RejectReason.CONSENT_PENDING)
            if isinstance(checked, int):
                event["ts"] = checked  # in place: keeps its position among the fields
                if type(event.get("seq")) is float or "screen" in event:
                    whole_numbers(event)
                if version.upcasts:  # to the current shape (collector.schemas), `schema` removed
                    version.upcast(event)
                elif "schema" in event:
                    del event["schema"]
                if batch is None:  # else counted once below
                    versions[version.version] = versions.get(version.version, 0) + 1
                if "consent" in event and pending is not None:  # "pending": the only value the schema allows
                    del event["consent"]
                    pending(event)
                event_id = event.get("event_id")
                if event_id is None:
                    event_id = event["event_id"] = str(uuid.uuid4())
                ids.append(event_id.lower().encode())
                records.append(dumps(event))
                continue
            error = checked
        else:
            error = EventError(index, *version)
        errors.append(error)
        rejected.append({"reason": error.reason.value, "index": index, "path": error.path,
                         "message": error.message, "event": event, "user_agent": user_agent,
                         **({"ip_hash": ip_hash} if ip_hash else {})})
    stamp = request_stamp(received_at_ms, user_agent, ip_hash) if records else b""
    if batch is not None and records:
        versions[batch.version] = len(records)
    return Outcome(records, ids, stamp, errors, rejected, versions)


def whole_numbers(event: dict[str, Any]) -> None:
    """Write the integer fields of a schema-valid event (`seq`, `screen.w`, `screen.h`) as JSON integers.

    JSON Schema's "integer" is any number with a zero fractional part, so `3.0` is valid (JSON Schema
    Core 2020-12, 4.2.1 "Instance Data Model"); ClickHouse's JSONEachRow refuses `3.0` for a UInt32
    column (CANNOT_PARSE_INPUT_ASSERTION_FAILED), which would dead-letter an event the collector
    accepted. Changes `event` in place.
    """
    seq = event.get("seq")
    if type(seq) is float:
        event["seq"] = int(seq)
    screen = event.get("screen")
    if screen is not None and (type(screen["w"]) is float or type(screen["h"]) is float):
        event["screen"] = {"w": int(screen["w"]), "h": int(screen["h"])}


def _check_site(event: dict[str, Any], index: int, sites: Mapping[str, frozenset[str]], origin: str | None,
                ts: int) -> EventError | int:
    """The site allowlist on a schema-valid event: its error, or `ts` when it passes."""
    allowed = sites.get(event["site_id"])
    if allowed is None:
        return EventError(index, "/site_id", f"site_id {event['site_id']!r} is not one of the configured sites "
                          "(CLICKSTREAM_SITES)", RejectReason.UNKNOWN_SITE)
    if origin is not None and origin.rstrip("/").lower() not in allowed:
        return EventError(index, "/site_id", f"Origin {origin[:200]!r} is not allowed for site "
                          f"{event['site_id']!r} (CLICKSTREAM_SITES)", RejectReason.ORIGIN_NOT_ALLOWED)
    return ts


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
