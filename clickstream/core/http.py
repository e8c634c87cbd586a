"""HTTP pieces every route shares: reading a body under a size limit, and bearer-token checks.

Client disconnects surface as Starlette's `ClientDisconnect`: the route counts them (there is
nobody to answer).
"""

from __future__ import annotations

import hmac

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from clickstream.core.errors import TooLarge

__all__ = ["ClientDisconnect", "bearer_matches", "receive_body"]


async def receive_body(receive: Receive, content_length: str | None, limit: int, *,
                       code: str = "too_large") -> bytes:
    """The request body from ASGI `http.request` messages (`content_length`: the header or None).

    Raises TooLarge (413, error `code`) as soon as more than `limit` bytes are declared or have
    arrived, so a missing or lying Content-Length cannot get past the limit; ClientDisconnect on
    `http.disconnect` before the end.
    """
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise TooLarge(f"body exceeds {limit} bytes", code=code)
    chunks: list[bytes] = []
    size = 0
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
