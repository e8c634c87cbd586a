"""Per-event validation against one event JSON Schema (by default the current one,
schemas/event.schema.json; every accepted version is compiled by collector.schemas).

The hot path uses jsonschema-rs (~1.4 µs per event here); python-jsonschema is kept for
`check_schema` and as the test oracle. Errors are reported as (path, message) where `path` is a
JSON Pointer (RFC 6901) into the event, e.g. `/utm/source`, `""` for the event itself.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jsonschema_rs

from clickstream.core.resources import load_schema
from clickstream.core.schema import SchemaValidator

EVENT_SCHEMA = "event.schema.json"


class RejectReason(enum.StrEnum):
    """Why an event or a request was refused; one counter per reason (`events_rejected_total`)."""

    SCHEMA_VIOLATION = "schema_violation"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TS_TOO_OLD = "ts_too_old"
    TS_IN_FUTURE = "ts_in_future"
    MALFORMED_JSON = "malformed_json"
    EMPTY_BATCH = "empty_batch"
    BATCH_TOO_LARGE = "batch_too_large"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    SPOOL_FULL = "spool_full"
    SPOOL_UNAVAILABLE = "spool_unavailable"
    UNKNOWN_SITE = "unknown_site"  # site_id not in CLICKSTREAM_SITES
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"  # a browser Origin not listed for the event's site
    REJECTED_UNAVAILABLE = "rejected_unavailable"  # rejected/ cannot keep the request's dead letters
    CONSENT_PENDING = "consent_pending"  # no ids and no request to derive them from (clickstream import)
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"  # `schema` names no accepted version (collector.schemas)


@dataclasses.dataclass(frozen=True, slots=True)
class EventError:
    """One rejected event: its index in the request, a JSON Pointer path and a message."""

    index: int
    path: str
    message: str
    reason: RejectReason

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "path": self.path, "message": self.message, "reason": self.reason.value}


class EventValidator(SchemaValidator):
    """Validates decoded JSON values against the event schema with jsonschema-rs, one by one or a
    whole batch in one call."""

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        schema = schema if schema is not None else load_schema(EVENT_SCHEMA)
        super().__init__(schema)
        # the same schema as `items` of an array: a batch validated in one call
        items = {k: v for k, v in schema.items() if k != "$schema"}
        self._batch_validator = jsonschema_rs.validator_for(
            {"$schema": schema.get("$schema", "https://json-schema.org/draft/2020-12/schema"),
             "type": "array", "items": items})

    def all_valid(self, events: list[Any]) -> bool:
        """True when every value of `events` satisfies the schema (False says some do not)."""
        try:
            return bool(self._batch_validator.is_valid(events))
        except ValueError:  # TRICKY: too deep for jsonschema-rs: not a 500
            return False
