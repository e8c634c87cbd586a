"""HTTP pieces every route shares: reading a body under a size limit, bearer-token checks, and the
HTTP protocol that times out slow clients.

Client disconnects surface as Starlette's `ClientDisconnect`: the route counts them (there is
nobody to answer).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import Receive
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from clickstream.core.errors import TooLarge

__all__ = ["ClientDisconnect", "RawRoute", "bearer_matches", "guarded_protocol", "receive_body", "receive_rest"]

#: The protocol's logger: uvicorn's, one level down, never at TRACE, where uvicorn writes the
#: client's address with every connection (docs/architecture.md: the raw IP is never stored).
_CONNECTION_LOG = logging.getLogger("uvicorn.error.connections")
_CONNECTION_LOG.setLevel(logging.DEBUG)


class RawRoute(Route):
    """A route to a raw ASGI app (an object with `__call__(scope, receive, send)`) on an exact path.

    `clickstream.web.create_app` also serves it ahead of Starlette's middleware and router for
    requests of its methods without an `Origin` header (no CORS work to do), which is most of the
    collector's hot path (BENCHMARKS.md "Collector"). The app answers its own errors: an exception
    escaping it is answered 500 by uvicorn, as Starlette's ServerErrorMiddleware would.
    """


async def receive_body(receive: Receive, content_length: str | None, limit: int, *,
                       code: str = "too_large") -> bytes:
    """The request body from ASGI `http.request` messages (`content_length`: the header or None).

    Raises TooLarge (413, error `code`) as soon as more than `limit` bytes are declared or have
    arrived, so a missing or lying Content-Length cannot get past the limit; ClientDisconnect on
    `http.disconnect` before the end.
    """
    if content_length is not None and content_length.isascii() and content_length.isdigit() \
                and int(content_length) > limit:
        raise TooLarge(f"body exceeds {limit} bytes", code=code)
    return await receive_rest(receive, b"", limit, code=code)


async def receive_rest(receive: Receive, received: bytes, limit: int, *, code: str = "too_large") -> bytes:
    """`received` (the body's first bytes, already read) and the rest of the body, under `limit`
    bytes in all; errors as `receive_body`. For a hot path that reads the first message itself."""
    if len(received) > limit:
        raise TooLarge(f"body exceeds {limit} bytes", code=code)
    chunks: list[bytes] = [received] if received else []
    size = len(received)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"body exceeds {limit} bytes", code=code)
        if not message.get("more_body", False):
            if not chunks:
                return chunk  # the common case: one message, no copy
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True when the `Authorization` header is `Bearer <token>` (constant-time compare).

    False for an empty configured token: a route is never open because its secret is unset.
    """
    if not token:
        return False
    return hmac.compare_digest((authorization or "").encode(), f"Bearer {token}".encode())


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for slow clients ("slowloris"): a connection
    must deliver a request's headers within `header_timeout_s` of connecting or of the request's
    first byte, and its body within `body_timeout_s` of the headers; otherwise it is closed and
    counted (`clickstream_http_timeouts_total{phase}`). uvicorn bounds only idle keep-alive time."""

    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 30.0
    timeouts: ClassVar[Counter | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _CONNECTION_LOG
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, phase: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, phase: str) -> None:
        self._deadline = None
        if self.transport is not None and not self.transport.is_closing():
            if self.timeouts is not None:
                self.timeouts.labels(phase=phase).inc()
            self.transport.close()  # a request in progress sees http.disconnect

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.header_timeout_s, "headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout_s, "body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def guarded_protocol(header_timeout_s: float, body_timeout_s: float,
                     registry: CollectorRegistry | None = None) -> type[HttpToolsProtocol]:
    """The HTTP protocol class for `uvicorn.Config(http=...)`: httptools with the slow-client
    deadlines (seconds), counted in `registry` when given (`clickstream_http_timeouts_total`,
    labels phase=headers|body)."""
    timeouts = None
    if registry is not None:
        timeouts = Counter("clickstream_http_timeouts", "Connections closed because a request's headers or body "
                           "arrived too slowly (CLICKSTREAM_HTTP_HEADER_TIMEOUT_S / _BODY_TIMEOUT_S)", ["phase"],
                           registry=registry)
        for phase in ("headers", "body"):
            timeouts.labels(phase=phase)
    attributes = {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s, "timeouts": timeouts}
    return type("GuardedProtocol", (_GuardedProtocol,), attributes)
