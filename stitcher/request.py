"""POST /stitch body: parse -> validate (schemas/stitch_request.schema.json) -> normalise.

The normalised request is what idempotency compares: a repeated lead_id is "the same request" when
every field equals the original's, absent optional fields included (absent `properties` is `{}`;
`occurred_at` compares as epoch milliseconds, so `1717243200000` and `"2024-06-01T12:00:00Z"` are
equal). `fingerprint` is the SHA-256 of its canonical JSON (sorted keys), kept in the outbox.
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import cache
from typing import Any

import orjson

from clickstream.core.errors import InvalidRequest
from clickstream.core.resources import load_schema
from clickstream.core.schema import SchemaValidator
from clickstream.core.times import MIN_TS_MS, parse_ts


@cache
def _validator() -> SchemaValidator:
    return SchemaValidator(load_schema("stitch_request.schema.json"))


@dataclasses.dataclass(frozen=True, slots=True)
class StitchRequest:
    """A validated stitch request; `occurred_at_ms` is None when the body had none (default: now)."""

    lead_id: str
    anonymous_id: str
    occurred_at_ms: int | None
    session_id: str | None
    site_id: str | None
    properties: dict[str, Any]

    def canonical(self) -> bytes:
        """Canonical JSON (sorted keys) of every field: what `fingerprint` hashes."""
        return orjson.dumps(dataclasses.asdict(self), option=orjson.OPT_SORT_KEYS)

    def fingerprint(self) -> str:
        """SHA-256 hex of `canonical()`."""
        return hashlib.sha256(self.canonical()).hexdigest()


def differing_fields(original: bytes, repeat: StitchRequest) -> list[str]:
    """Names of the fields where `repeat` differs from the `original` canonical request (sorted)."""
    before: dict[str, Any] = orjson.loads(original)
    after = orjson.loads(repeat.canonical())
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _invalid(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{path or 'body'}: {message}",
                          errors=[{"index": 0, "path": path, "message": message}])


def parse_request(body: bytes, *, now_ms: int, max_skew_ms: int) -> StitchRequest:
    """Decode and validate a POST /stitch body.

    `occurred_at` must lie between 2000-01-01 and `now_ms + max_skew_ms` (a client clock ahead by
    more than the collector's allowed skew is an error, as for `ts`).
    Raises InvalidRequest (400) with `errors` = [{"index": 0, "path", "message"}] sorted by path.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _invalid("", f"malformed JSON: {exc}") from exc
    found = _validator().errors(value)
    if found:
        errors = [{"index": 0, "path": path, "message": message} for path, message in found]
        raise InvalidRequest("; ".join(f"{e['path'] or 'body'}: {e['message']}" for e in errors[:5]), errors=errors)
    occurred_at_ms: int | None = None
    if "occurred_at" in value:
        try:
            # the collector's rule for `ts`, so a lead's occurred_at and its events are read alike
            occurred_at_ms = parse_ts(value["occurred_at"])
        except ValueError as exc:
            raise _invalid("/occurred_at", f"not a valid timestamp: {exc}") from exc
        if occurred_at_ms < MIN_TS_MS:
            raise _invalid("/occurred_at", "occurred_at is before 2000-01-01")
        if occurred_at_ms > now_ms + max_skew_ms:
            raise _invalid("/occurred_at", f"occurred_at is more than {max_skew_ms // 1000} s in the future")
    return StitchRequest(
        lead_id=value["lead_id"],
        anonymous_id=value["anonymous_id"],
        occurred_at_ms=occurred_at_ms,
        session_id=value.get("session_id"),
        site_id=value.get("site_id"),
        properties=value.get("properties") or {},
    )
