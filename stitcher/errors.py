"""The stitcher's error hierarchy, mapped to HTTP in one place (`StitchError.response`).

Statuses follow shared/CONVENTIONS.md (PostHog's `CaptureError`): 400 invalid body, 401 missing or
wrong token, 409 the lead_id was stitched with different data, 413 body too large, 422 nothing to
attribute and no site given, 503 (+ Retry-After when retrying helps) for a stitcher that is off or
cannot read ClickHouse / flush the spool right now.
Body: `{"error": <code>, "message": <text>}` plus `errors` (400) or `fields` (409).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class StitchError(Exception):
    """A refused stitch request; `status` and `code` say how it is answered."""

    status = 500
    code = "internal"
    retry_after_s: int | None = None

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}

    def response(self) -> Response:
        headers: dict[str, str] = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return Response(orjson.dumps(self.body()), status_code=self.status, media_type="application/json",
                        headers=headers)


class InvalidRequest(StitchError):
    """400: malformed JSON, a schema violation, or an impossible occurred_at.

    `errors` is `[{"index": 0, "path": <JSON Pointer>, "message": ...}]`, the shape of POST /collect.
    """

    status = 400
    code = "invalid"


class Unauthorized(StitchError):
    status = 401
    code = "unauthorized"


class Conflict(StitchError):
    """409: the lead_id was stitched before with other data; `fields` names what differs."""

    status = 409
    code = "conflict"


class BodyTooLarge(StitchError):
    status = 413
    code = "too_large"


class NothingToAttribute(StitchError):
    """422: no session of the anonymous id in the lookback window and no `site_id` in the body."""

    status = 422
    code = "no_visitor_data"


class Disabled(StitchError):
    """503 without Retry-After: no CLICKSTREAM_STITCH_TOKEN, the route is off (never open by default)."""

    status = 503
    code = "disabled"


class Unavailable(StitchError):
    """503 + Retry-After: ClickHouse or the freshness flush failed; nothing was emitted, retry."""

    status = 503
    code = "unavailable"
    retry_after_s = 1
