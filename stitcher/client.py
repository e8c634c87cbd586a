"""Python client of POST /stitch for application conversion hooks (sync and async).

    from stitcher.client import StitchClient

    client = StitchClient("http://127.0.0.1:8000", token=os.environ["CLICKSTREAM_STITCH_TOKEN"])
    result = client.stitch(lead.id, request.cookies["_cs_aid"], properties={"form": "demo"})
    result.event["last_touch"]["utm_campaign"]

Retries: connection errors, timeouts and 5xx answers are retried up to `retries` times with capped,
jittered exponential backoff (tenacity). That is safe because a stitch is idempotent per lead_id:
a request that reached the server before the connection broke is answered 200 with the same event
on the retry (`created` False). 4xx answers are not retried: they raise StitchRejected (409:
StitchConflict). Retries exhausted: StitchUnavailable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import httpx
import orjson
from tenacity import AsyncRetrying, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from clickstream.core.resources import version

#: Backoff between attempts: random in [0, min(cap, multiplier * 2**attempt)] seconds.
BACKOFF_MULTIPLIER_S = 0.2
BACKOFF_CAP_S = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class StitchResult:
    """The answer to a stitch: 201 (`created` True, a new event) or 200 (the original event of a repeat).

    `event` is the lead_created event (schemas/lead_created.schema.json) as decoded JSON.
    """

    status_code: int
    created: bool
    event: dict[str, Any]


class StitchClientError(Exception):
    """Base of the client's errors."""


class StitchRejected(StitchClientError):
    """The stitcher answered 4xx (bad request, wrong token, conflict, nothing to attribute): not retried.

    `status_code`, `error` (the server's code, e.g. "invalid"), `message` and the decoded `body`.
    """

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code = status_code
        self.body = body
        self.error = str(body.get("error", ""))
        self.message = str(body.get("message", ""))
        super().__init__(f"{status_code} {self.error}: {self.message}")


class StitchConflict(StitchRejected):
    """409: the lead_id was stitched before with different data; `body["fields"]` names them."""


class StitchUnavailable(StitchClientError):
    """Every attempt failed with a connection error, a timeout or a 5xx answer."""


class _Retryable(Exception):
    """A 5xx answer, retried like a connection error."""

    def __init__(self, status_code: int, text: str) -> None:
        super().__init__(f"stitcher answered {status_code}: {text[:300]}")


def _timestamp(value: dt.datetime | int | str) -> int | str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
        return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def build_body(lead_id: str, anonymous_id: str, *, session_id: str | None = None,
               occurred_at: dt.datetime | int | str | None = None, properties: dict[str, Any] | None = None,
               site_id: str | None = None) -> bytes:
    """The JSON body of POST /stitch (schemas/stitch_request.schema.json); None fields are left out.

    `occurred_at`: an aware datetime, epoch milliseconds, or an RFC 3339 string.
    Raises ValueError for a naive datetime.
    """
    body: dict[str, Any] = {"lead_id": lead_id, "anonymous_id": anonymous_id}
    if session_id is not None:
        body["session_id"] = session_id
    if occurred_at is not None:
        body["occurred_at"] = _timestamp(occurred_at)
    if properties is not None:
        body["properties"] = properties
    if site_id is not None:
        body["site_id"] = site_id
    return orjson.dumps(body)


def _result(response: httpx.Response) -> StitchResult:
    status = response.status_code
    if status >= 500:
        raise _Retryable(status, response.text)
    try:
        body = response.json()
    except ValueError:
        body = {"error": "not_json", "message": response.text[:300]}
    if status in (200, 201):
        return StitchResult(status_code=status, created=status == 201, event=body)
    if status == 409:
        raise StitchConflict(status, body)
    raise StitchRejected(status, body)


class _Base:
    def __init__(self, base_url: str, token: str, timeout_s: float, retries: int) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = base_url.rstrip("/") + "/stitch"
        self.timeout_s = timeout_s
        self.retries = retries
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "User-Agent": f"clickstream-stitch-client/{version()}",
        }

    def _policy(self) -> dict[str, Any]:
        return {
            "retry": retry_if_exception_type((httpx.TransportError, _Retryable)),
            "wait": wait_random_exponential(multiplier=BACKOFF_MULTIPLIER_S, max=BACKOFF_CAP_S),
            "stop": stop_after_attempt(self.retries + 1),
            "reraise": True,
        }


class StitchClient(_Base):
    """Blocking client: `stitch(...) -> StitchResult`. Use as a context manager or call `close()`."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 5.0, retries: int = 3) -> None:
        super().__init__(base_url, token, timeout_s, retries)
        self._http = httpx.Client(timeout=timeout_s)

    def stitch(self, lead_id: str, anonymous_id: str, *, session_id: str | None = None,
               occurred_at: dt.datetime | int | str | None = None, properties: dict[str, Any] | None = None,
               site_id: str | None = None) -> StitchResult:
        """POST /stitch and return the event. Raises StitchRejected / StitchConflict (4xx),
        StitchUnavailable (retries exhausted), ValueError (naive `occurred_at`)."""
        body = build_body(lead_id, anonymous_id, session_id=session_id, occurred_at=occurred_at,
                          properties=properties, site_id=site_id)
        try:
            for attempt in Retrying(**self._policy()):
                with attempt:
                    return _result(self._http.post(self.url, content=body, headers=self.headers))
        except (httpx.TransportError, _Retryable) as exc:
            raise StitchUnavailable(f"{self.url}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover - Retrying returns or raises

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StitchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStitchClient(_Base):
    """The asyncio client: `await stitch(...) -> StitchResult`; `async with` or `await aclose()`."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 5.0, retries: int = 3) -> None:
        super().__init__(base_url, token, timeout_s, retries)
        self._http = httpx.AsyncClient(timeout=timeout_s)

    async def stitch(self, lead_id: str, anonymous_id: str, *, session_id: str | None = None,
                     occurred_at: dt.datetime | int | str | None = None, properties: dict[str, Any] | None = None,
                     site_id: str | None = None) -> StitchResult:
        """POST /stitch and return the event. Raises like StitchClient.stitch."""
        body = build_body(lead_id, anonymous_id, session_id=session_id, occurred_at=occurred_at,
                          properties=properties, site_id=site_id)
        try:
            async for attempt in AsyncRetrying(**self._policy()):
                with attempt:
                    return _result(await self._http.post(self.url, content=body, headers=self.headers))
        except (httpx.TransportError, _Retryable) as exc:
            raise StitchUnavailable(f"{self.url}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncStitchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
