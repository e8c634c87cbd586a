"""The `lead_created` business event: its id, its exact bytes, and its `lead_events` row.

Shape: schemas/lead_created.schema.json (versioned $id, repeated in the event's `schema` field so a
webhook consumer can tell versions apart). The bytes built here are what the 201 answers, what the
outbox keeps, what a repeated stitch returns, what `lead_events.payload` stores and what the
webhook receives: one serialisation, never rebuilt.
"""

from __future__ import annotations

import uuid
from functools import cache
from typing import Any

import jsonschema_rs
import orjson

from clickstream import SCHEMAS_DIR
from stitcher.attribution import Attribution, Touch
from stitcher.request import StitchRequest, format_timestamp, parse_timestamp_ms

LEAD_SCHEMA_PATH = SCHEMAS_DIR / "lead_created.schema.json"
SCHEMA_ID = "https://clickstream.dev/schemas/lead_created/1-0-0.json"
#: Namespace of event ids: uuid5(NAMESPACE_URL, "https://clickstream.dev/lead_created"), fixed
#: forever (changing it would give every lead a second event_id and break idempotency).
LEAD_NAMESPACE = uuid.UUID("2d1c55ab-5b48-51f0-9461-e635bf3a99b7")


def event_id_for(lead_id: str) -> str:
    """The lead's stable event id: UUID v5 of `lead_id` in LEAD_NAMESPACE (RFC 9562 §5.5)."""
    return str(uuid.uuid5(LEAD_NAMESPACE, lead_id))


@cache
def _validator() -> Any:
    return jsonschema_rs.validator_for(orjson.loads(LEAD_SCHEMA_PATH.read_bytes()))


def _touch(touch: Touch) -> dict[str, Any]:
    return {
        "utm_source": touch.utm_source,
        "utm_medium": touch.utm_medium,
        "utm_campaign": touch.utm_campaign,
        "utm_term": touch.utm_term,
        "utm_content": touch.utm_content,
        "referrer_host": touch.referrer_host,
        "channel": touch.channel,
        "landing_path": touch.landing_path,
        "ts": None if touch.ts_ms is None else format_timestamp(touch.ts_ms),
    }


def build_event(request: StitchRequest, attribution: Attribution, *, occurred_at_ms: int, emitted_at_ms: int) -> bytes:
    """The event's exact JSON bytes (field order fixed, compact, UTF-8).

    Raises ValueError when the result does not satisfy the schema (a bug, never the client's fault).
    """
    event = {
        "schema": SCHEMA_ID,
        "type": "lead_created",
        "event_id": event_id_for(request.lead_id),
        "lead_id": request.lead_id,
        "site_id": attribution.site_id,
        "anonymous_id": request.anonymous_id,
        "session_id": attribution.session_id,
        "occurred_at": format_timestamp(occurred_at_ms),
        "landing_path": attribution.landing_path,
        "first_touch": _touch(attribution.first_touch),
        "last_touch": _touch(attribution.last_touch),
        "variants": attribution.variants,
        "properties": request.properties,
        "emitted_at": format_timestamp(emitted_at_ms),
    }
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in _validator().iter_errors(event)]
    if errors:
        raise ValueError(f"lead_created does not satisfy {SCHEMA_ID}: {'; '.join(errors[:5])}")
    return orjson.dumps(event)


def _ch_time(rfc3339: str | None) -> str | None:
    # TRICKY: DateTime64 from JSONEachRow as "<seconds>.<millis>": unambiguous (epoch, UTC), while a
    # bare JSON integer would be read as seconds and a date text in the server's zone settings.
    if rfc3339 is None:
        return None
    ms = parse_timestamp_ms(rfc3339)
    return f"{ms // 1000}.{ms % 1000:03d}"


def lead_events_row(payload: bytes) -> bytes:
    """The JSONEachRow line for ClickHouse `lead_events` (sql/0004_lead_events.sql) of one event.

    `payload` is stored as sent; `properties` as its JSON text (values are heterogeneous).
    """
    event = orjson.loads(payload)
    touches = {}
    for name in ("first_touch", "last_touch"):
        touch = dict(event[name])
        touch["ts"] = _ch_time(touch["ts"])
        touches[name] = touch
    return orjson.dumps({
        "event_id": event["event_id"],
        "lead_id": event["lead_id"],
        "site_id": event["site_id"],
        "anonymous_id": event["anonymous_id"],
        "occurred_at": _ch_time(event["occurred_at"]),
        "session_id": event["session_id"],
        "landing_path": event["landing_path"],
        **touches,
        "variants": event["variants"],
        "properties": orjson.dumps(event["properties"]).decode(),
        "payload": payload.decode(),
        "emitted_at": _ch_time(event["emitted_at"]),
    })
