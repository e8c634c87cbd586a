"""HTTP pieces every route shares: reading a body under a size limit, and bearer-token checks.

Client disconnects surface as Starlette's `ClientDisconnect`: the route counts them (there is
nobody to answer).
"""

from __future__ import annotations

import hmac

from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import Receive

from clickstream.core.errors import TooLarge

__all__ = ["ClientDisconnect", "RawRoute", "bearer_matches", "receive_body", "receive_rest"]


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
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
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
