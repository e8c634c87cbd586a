"""JSON Schema validation with jsonschema-rs, reporting (JSON Pointer, message) pairs.

Used by the collector (schemas/event.schema.json) and the stitcher
(schemas/stitch_request.schema.json). Paths are JSON Pointers (RFC 6901) into the instance,
`""` for the instance itself; messages are clipped (jsonschema-rs echoes the whole offending
value, up to the body limit, into its message).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jsonschema_rs

#: Longest message kept per error; the middle of longer ones is elided, keeping the reason at the end.
MAX_MESSAGE_CHARS = 240

#: Message of a value nested deeper than jsonschema-rs converts (it raises `ValueError: Recursion
#: limit reached` somewhere between 500 and 1000 levels; orjson accepts 1024).
TOO_DEEP_MESSAGE = "value nested too deeply to validate"


def pointer(parts: Iterable[Any]) -> str:
    """RFC 6901 JSON Pointer of a path (`["utm", "source"]` -> `/utm/source`, `~` and `/` escaped)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def clip_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` unchanged when at most `limit` characters, else its head and tail around "…"."""
    if len(message) <= limit:
        return message
    half = (limit - 1) // 2
    return message[:half] + "…" + message[len(message) - half :]


class SchemaValidator:
    """One compiled JSON Schema (draft 2020-12)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._validator = jsonschema_rs.validator_for(schema)

    def is_valid(self, value: Any) -> bool:
        """True when `value` (any decoded JSON) satisfies the schema; False when nested too deeply."""
        try:
            return bool(self._validator.is_valid(value))
        except ValueError:  # TRICKY: too deep for jsonschema-rs (see TOO_DEEP_MESSAGE): not a 500
            return False

    def errors(self, value: Any) -> list[tuple[str, str]]:
        """All violations as (JSON Pointer, clipped message), sorted; empty when valid.

        A value nested too deeply for jsonschema-rs yields the single error ("", TOO_DEEP_MESSAGE).
        """
        try:
            found = [(pointer(e.instance_path), clip_message(str(e.message)))
                     for e in self._validator.iter_errors(value)]
        except ValueError:
            return [("", TOO_DEEP_MESSAGE)]
        return sorted(found)

    def first_error(self, value: Any) -> tuple[str, str] | None:
        """The first of `errors(value)` (smallest JSON Pointer), or None when valid."""
        errors = self.errors(value)
        return errors[0] if errors else None
