"""POST /stitch body: parse -> validate (schemas/stitch_request.schema.json) -> normalise.

The normalised request is what idempotency compares: a repeated lead_id is "the same request" when
every field equals the original's, absent optional fields included (absent `properties` is `{}`;
`occurred_at` compares as epoch milliseconds, so `1717243200000` and `"2024-06-01T12:00:00Z"` are
equal). `fingerprint` is the SHA-256 of its canonical JSON (sorted keys), kept in the outbox.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from functools import cache
from typing import Any

import jsonschema_rs
import orjson

from clickstream import SCHEMAS_DIR
from collector.pipeline import parse_ts
from stitcher.errors import InvalidRequest

REQUEST_SCHEMA_PATH = SCHEMAS_DIR / "stitch_request.schema.json"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MS = dt.timedelta(milliseconds=1)
#: Earliest accepted occurred_at (2000-01-01T00:00:00Z, ms): the `events` table refuses older ts too.
MIN_OCCURRED_AT_MS = 946_684_800_000
MAX_ERROR_CHARS = 240


@cache
def _validator() -> Any:
    return jsonschema_rs.validator_for(orjson.loads(REQUEST_SCHEMA_PATH.read_bytes()))


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


def parse_timestamp_ms(value: Any) -> int:
    """Epoch milliseconds (UTC) of a schema-valid timestamp: integer ms, or an RFC 3339 string.

    The collector's rule for `ts` (collector.pipeline.parse_ts), so a lead's occurred_at and the
    events it is compared with are read the same way. Raises ValueError like it.
    """
    return parse_ts(value)


def format_timestamp(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, `2024-06-01T12:00:00.000Z`, from epoch ms (integer arithmetic)."""
    moment = _EPOCH + dt.timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


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
    validator = _validator()
    try:
        found = sorted((_pointer(e.instance_path), _clip(str(e.message))) for e in validator.iter_errors(value))
    except ValueError:  # TRICKY: nested too deeply for jsonschema-rs; not a 500
        found = [("", "value nested too deeply to validate")]
    if found:
        errors = [{"index": 0, "path": path, "message": message} for path, message in found]
        raise InvalidRequest("; ".join(f"{e['path'] or 'body'}: {e['message']}" for e in errors[:5]), errors=errors)
    occurred_at_ms: int | None = None
    if "occurred_at" in value:
        try:
            occurred_at_ms = parse_timestamp_ms(value["occurred_at"])
        except ValueError as exc:
            raise _invalid("/occurred_at", f"not a valid timestamp: {exc}") from exc
        if occurred_at_ms < MIN_OCCURRED_AT_MS:
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
