"""Per-event validation against the shared JSON Schema (schemas/event.schema.json).

The hot path uses jsonschema-rs (~1.4 µs per event here); python-jsonschema is kept for
`check_schema` and as the test oracle. Errors are reported as (path, message) where `path` is a
JSON Pointer (RFC 6901) into the event, e.g. `/utm/source`, `""` for the event itself.
"""

from __future__ import annotations

import dataclasses
import enum
from functools import cache
from typing import Any

import jsonschema_rs
import orjson

from clickstream import SCHEMAS_DIR

EVENT_SCHEMA_PATH = SCHEMAS_DIR / "event.schema.json"


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


@dataclasses.dataclass(frozen=True, slots=True)
class EventError:
    """One rejected event: its index in the request, a JSON Pointer path and a message."""

    index: int
    path: str
    message: str
    reason: RejectReason

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "path": self.path, "message": self.message, "reason": self.reason.value}


#: Longest message kept per error; jsonschema-rs echoes the whole offending value (up to the 64 KiB
#: body) into its message, so the middle of longer ones is elided, keeping the reason at the end.
MAX_MESSAGE_CHARS = 240

#: Message of an event nested deeper than jsonschema-rs converts (it raises `ValueError:
#: Recursion limit reached` somewhere between 500 and 1000 levels; orjson accepts 1024).
TOO_DEEP_MESSAGE = "value nested too deeply to validate"


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def clip_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` unchanged when at most `limit` characters, else its head and tail around "…"."""
    if len(message) <= limit:
        return message
    half = (limit - 1) // 2
    return message[:half] + "…" + message[len(message) - half :]


@cache
def load_schema(name: str = "event.schema.json") -> dict[str, Any]:
    """The parsed JSON Schema document `schemas/<name>`."""
    schema: dict[str, Any] = orjson.loads((SCHEMAS_DIR / name).read_bytes())
    return schema


class EventValidator:
    """Validates one decoded JSON value against a schema with jsonschema-rs."""

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        schema = schema if schema is not None else load_schema()
        self._validator = jsonschema_rs.validator_for(schema)
        # the same schema as `items` of an array: a batch validated in one call
        items = {k: v for k, v in schema.items() if k != "$schema"}
        self._batch_validator = jsonschema_rs.validator_for(
            {"$schema": schema.get("$schema", "https://json-schema.org/draft/2020-12/schema"),
             "type": "array", "items": items})

    def is_valid(self, event: Any) -> bool:
        """True when `event` (any decoded JSON value) satisfies the schema."""
        try:
            return bool(self._validator.is_valid(event))
        except ValueError:  # TRICKY: too deep for jsonschema-rs (see TOO_DEEP_MESSAGE): not a 500
            return False

    def all_valid(self, events: list[Any]) -> bool:
        """True when every value of `events` satisfies the schema (False says some do not)."""
        try:
            return bool(self._batch_validator.is_valid(events))
        except ValueError:
            return False

    def errors(self, event: Any) -> list[tuple[str, str]]:
        """All violations as (JSON Pointer path, message), sorted by (path, message); empty when valid.

        Messages are clipped to MAX_MESSAGE_CHARS. A value nested too deeply for jsonschema-rs
        yields the single error ("", TOO_DEEP_MESSAGE).
        """
        try:
            found = [(_pointer(e.instance_path), clip_message(str(e.message)))
                     for e in self._validator.iter_errors(event)]
        except ValueError:
            return [("", TOO_DEEP_MESSAGE)]
        return sorted(found)

    def first_error(self, event: Any) -> tuple[str, str] | None:
        """The first of `errors(event)` (smallest JSON Pointer), or None when the event is valid."""
        errors = self.errors(event)
        return errors[0] if errors else None
