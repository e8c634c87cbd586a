"""The `lead_created` business event: its id, its exact bytes, and its `lead_events` row.

Shape: schemas/lead_created.schema.json (versioned $id, repeated in the event's `schema` field so a
webhook consumer can tell versions apart). The bytes built here are what the 201 answers, what the
outbox keeps, what a repeated stitch returns, what `lead_events.payload` stores and what the
webhook receives: one serialisation, never rebuilt.
"""

from __future__ import annotations

import re
import uuid
from functools import cache
from typing import Any

import orjson

from clickstream.core.resources import load_schema
from clickstream.core.schema import SchemaValidator
from clickstream.core.times import ch_datetime, parse_ts, rfc3339
from stitcher.attribution import Attribution, Touch
from stitcher.request import StitchRequest

SCHEMA_ID = "https://clickstream.dev/schemas/lead_created/1-0-0.json"
#: `<name>/<SchemaVer>` of a schema URI `https://clickstream.dev/schemas/<name>/<SchemaVer>.json`.
_SCHEMA_NAME = re.compile(r"/([a-z][a-z0-9_]*/[0-9]+-[0-9]+-[0-9]+)\.json$")
#: Namespace of event ids: uuid5(NAMESPACE_URL, "https://clickstream.dev/lead_created"), fixed
#: forever (changing it would give every lead a second event_id and break idempotency).
LEAD_NAMESPACE = uuid.UUID("2d1c55ab-5b48-51f0-9461-e635bf3a99b7")


def event_id_for(lead_id: str) -> str:
    """The lead's stable event id: UUID v5 of `lead_id` in LEAD_NAMESPACE (RFC 9562 §5.5)."""
    return str(uuid.uuid5(LEAD_NAMESPACE, lead_id))


@cache
def _validator() -> SchemaValidator:
    return SchemaValidator(load_schema("lead_created.schema.json"))


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
        "ts": None if touch.ts_ms is None else rfc3339(touch.ts_ms),
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
        "occurred_at": rfc3339(occurred_at_ms),
        "landing_path": attribution.landing_path,
        "first_touch": _touch(attribution.first_touch),
        "last_touch": _touch(attribution.last_touch),
        "variants": attribution.variants,
        "properties": request.properties,
        "emitted_at": rfc3339(emitted_at_ms),
    }
    errors = [f"{path}: {message}" for path, message in _validator().errors(event)]
    if errors:
        raise ValueError(f"lead_created does not satisfy {SCHEMA_ID}: {'; '.join(errors[:5])}")
    return orjson.dumps(event)


def schema_name(uri: str) -> str:
    """The short name of a schema URI, as the webhook's `Clickstream-Schema` header carries it:
    `https://clickstream.dev/schemas/lead_created/1-0-0.json` -> `lead_created/1-0-0`.
    Raises ValueError for a URI of another form."""
    match = _SCHEMA_NAME.search(uri)
    if match is None:
        raise ValueError(f"not a clickstream schema URI: {uri!r}")
    return match[1]


def _ch_time(rfc3339_text: str | None) -> str | None:
    return None if rfc3339_text is None else ch_datetime(parse_ts(rfc3339_text))


def lead_events_row(payload: bytes) -> bytes:
    """The JSONEachRow line for ClickHouse `lead_events` (sql/0004_lead_events.sql) of one event.

    `payload` is stored as sent; `properties` as its JSON text (values are heterogeneous); `schema`
    (the event's schema URI, sql/0070_lead_schema.sql) as the event names it.
    """
    event = orjson.loads(payload)
    touches = {}
    for name in ("first_touch", "last_touch"):
        touch = dict(event[name])
        touch["ts"] = _ch_time(touch["ts"])
        touches[name] = touch
    return orjson.dumps({
        "event_id": event["event_id"],
        "schema": event["schema"],
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
