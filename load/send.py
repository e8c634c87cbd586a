"""Send generated events to a collector over HTTP, as browsers would (batches, one UA a request)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
import orjson


def post_events(
    base_url: str, events: Iterable[tuple[dict[str, Any], str]], *, batch_size: int = 50,
    client: httpx.Client | None = None,
) -> tuple[int, int]:
    """POST events in batches of `batch_size` (consecutive events sharing a User-Agent).

    Returns (accepted, rejected) summed over the 202/400 answers. Raises httpx.HTTPStatusError on
    any other status (413, 503, 5xx): a test or audit must not silently lose a request.
    """
    own = client is None
    http = client or httpx.Client(timeout=30)
    accepted = rejected = 0
    batch: list[dict[str, Any]] = []
    agent = ""

    def flush() -> None:
        nonlocal accepted, rejected, batch
        if not batch:
            return
        response = http.post(f"{base_url}/collect", content=orjson.dumps(batch),
                             headers={"Content-Type": "application/json", "User-Agent": agent})
        if response.status_code not in (202, 400):
            response.raise_for_status()
            raise httpx.HTTPStatusError(f"unexpected {response.status_code}", request=response.request,
                                        response=response)
        body = response.json()
        accepted += body["accepted"]
        rejected += body["rejected"]
        batch = []

    try:
        for event, ua in events:
            if ua != agent or len(batch) >= batch_size:
                flush()
                agent = ua
            batch.append(event)
        flush()
    finally:
        if own:
            http.close()
    return accepted, rejected
