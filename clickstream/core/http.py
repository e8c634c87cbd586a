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
#: Slow clients are looked for every this fraction of the shorter timeout (closed at most that late).
SWEEP_FRACTION = 0.1


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
    counted (`clickstream_http_timeouts_total{phase}`). uvicorn bounds only idle keep-alive time.

    The hot path only notes the phase and the loop's time; one sweep per listener, every
    SWEEP_FRACTION of the shorter timeout while connections are open, closes the late ones (no
    timer per request).
    """

    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 30.0
    timeouts: ClassVar[Counter | None] = None
    #: Open connections of this listener (its subclass), and whether its sweep is scheduled.
    live: ClassVar[set[_GuardedProtocol]]
    sweeping: ClassVar[bool]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _CONNECTION_LOG
        self._phase: str | None = None  # "headers" or "body" while a request is arriving
        self._since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._phase, self._since = "headers", self.loop.time()
        cls = type(self)
        cls.live.add(self)
        if not cls.sweeping:
            cls.sweeping = True
            self.loop.call_later(cls._interval(), cls._sweep, self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        type(self).live.discard(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase is None:  # a later request on a kept-alive connection
            self._phase, self._since = "headers", self.loop.time()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase, self._since = "body", self.loop.time()

    def on_message_complete(self) -> None:
        self._phase = None
        super().on_message_complete()

    @classmethod
    def _interval(cls) -> float:
        return max(0.05, min(cls.header_timeout_s, cls.body_timeout_s) * SWEEP_FRACTION)

    @classmethod
    def _sweep(cls, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in list(cls.live):
            phase = conn._phase
            if phase is None:
                continue
            limit = cls.header_timeout_s if phase == "headers" else cls.body_timeout_s
            if now - conn._since > limit and not conn.transport.is_closing():
                if cls.timeouts is not None:
                    cls.timeouts.labels(phase=phase).inc()
                conn._phase = None
                conn.transport.close()  # a request in progress sees http.disconnect
        cls.sweeping = bool(cls.live)
        if cls.sweeping:
            loop.call_later(cls._interval(), cls._sweep, loop)


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
    attributes: dict[str, Any] = {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
                                  "timeouts": timeouts, "live": set(), "sweeping": False}
    return type("GuardedProtocol", (_GuardedProtocol,), attributes)
