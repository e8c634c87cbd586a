"""One error hierarchy for every HTTP route of clickstream, mapped to a status and one JSON shape here.

Statuses follow docs/architecture.md "HTTP" (PostHog capture's `CaptureError` mapping):
400 invalid, 401 unauthenticated, 409 conflict, 413 too large, 415 unsupported media type,
422 unprocessable, 503 unavailable (+ `Retry-After` when retrying helps).

Body, for every route but the query port (which answers in ClickHouse's own error shape,
reports/query_port.py): `{"error": <code>, "message": <text>, ...extra}`; `code` is a stable
snake_case name (for POST /collect, the `RejectReason` value), `extra` carries route-specific
fields (`accepted`/`rejected`/`errors` of POST /collect, `fields` of a 409).
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import orjson
from starlette.responses import Response

#: Seconds a client should wait after a 503 with Retry-After (the flusher drains in ~1 s).
RETRY_AFTER_S = 1


class HttpAnswer(NamedTuple):
    """An error as raw ASGI parts: status, headers (lower-case bytes), JSON body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ClickstreamError(Exception):
    """A refused request. Subclasses fix `status` and a default `code`; `extra` adds body fields."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal"
    retry_after_s: ClassVar[int | None] = None

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body: `{"error": code, "message": message, **extra}`."""
        return {"error": self.code, "message": self.message, **self.extra}

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers

    def answer(self) -> HttpAnswer:
        """Status, headers and body for a raw ASGI endpoint (the collector's hot path)."""
        body = orjson.dumps(self.body())
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.headers().items()]
        return HttpAnswer(self.status, headers, body)

    def response(self) -> Response:
        """The same answer as a Starlette Response."""
        return Response(orjson.dumps(self.body()), status_code=self.status, media_type="application/json",
                        headers=self.headers())


class InvalidRequest(ClickstreamError):
    """400: malformed JSON, a schema violation, an impossible value."""

    status = 400
    default_code = "invalid"


class Unauthorized(ClickstreamError):
    """401: a missing or wrong bearer token."""

    status = 401
    default_code = "unauthorized"


class Conflict(ClickstreamError):
    """409: the same key came before with other data."""

    status = 409
    default_code = "conflict"


class TooLarge(ClickstreamError):
    """413: more bytes or events than allowed."""

    status = 413
    default_code = "too_large"


class UnsupportedMediaType(ClickstreamError):
    """415: a Content-Type the route does not read."""

    status = 415
    default_code = "unsupported_media_type"


class Unprocessable(ClickstreamError):
    """422: well-formed, but nothing can be done with it."""

    status = 422
    default_code = "unprocessable"


class Unavailable(ClickstreamError):
    """503 + Retry-After: back-pressure or a dependency down; nothing was done, retry."""

    status = 503
    default_code = "unavailable"
    retry_after_s = RETRY_AFTER_S


class Disabled(ClickstreamError):
    """503 without Retry-After: the route is off until configured (retrying does not help)."""

    status = 503
    default_code = "disabled"
