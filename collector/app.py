"""The collector's HTTP side: `POST /collect`, `GET /beacon.js`, and its readiness check.

Contract: docs/architecture.md "HTTP". Refused requests raise clickstream.core.errors
(400 invalid, 413 too large, 415 unsupported media type, 503 + Retry-After for back-pressure),
turned into an answer in one place (`Collector.answer`), with the RejectReason as error code.
A client that disconnects before its body arrived is counted
(`clickstream_client_disconnects_total`) and not answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import hashlib
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import orjson
import rjsmin
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from clickstream.core import resources
from clickstream.core.component import Check
from clickstream.core.errors import ClickstreamError, HttpAnswer, Unavailable, UnsupportedMediaType
from clickstream.core.http import ClientDisconnect, receive_body
from clickstream.core.settings import Settings
from clickstream.core.spool import SpoolError, SpoolFullError, SpoolWriter
from collector.metrics import CollectorMetrics
from collector.pipeline import IpHasher, parse_body, process, rejected_reason
from collector.rejected import RejectedStore
from collector.validation import EventValidator, RejectReason

_JSON_HEADERS = [(b"content-type", b"application/json")]
_ACCEPTED_TYPES = ("application/json", "text/plain")
_SECRET_BYTES = 32


def _secret(data_dir: Path) -> bytes:
    """The data directory's random 32-byte key for IP hashing (created 0600 on first use).

    Written to a temporary file and renamed into place, so a crash never leaves a short or empty
    key (an empty key would make the daily hash unkeyed, i.e. brute-forceable over IPv4); a key
    file shorter than 32 bytes is replaced.
    """
    path = data_dir / ".secret"
    with contextlib.suppress(FileNotFoundError):
        value = path.read_bytes()
        if len(value) >= _SECRET_BYTES:
            return value
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_bytes(_SECRET_BYTES)
    tmp = data_dir / f".secret.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, value)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return value


class _CollectEndpoint:
    """`POST /collect` as a raw ASGI app (Starlette routes to it directly: no Request/Response
    objects on the hot path)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = content_length = user_agent = None
        for name, value in scope["headers"]:  # ASGI header names are lower-case bytes
            if name == b"content-type":
                content_type = content_type or value.decode("latin-1")
            elif name == b"content-length":
                content_length = content_length or value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = user_agent or value.decode("latin-1")
        client = scope.get("client")
        answer = await self.collector.answer(receive, content_type, content_length, user_agent,
                                             client[0] if client else None)
        if answer is None:  # the client is gone: nobody to answer
            return
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": answer.body})


class Collector:
    """Parse, validate, stamp and spool beacon events; owns the spool writer and rejected store."""

    def __init__(self, settings: Settings, metrics: CollectorMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or CollectorMetrics()
        self.validator = EventValidator()
        self.spool = SpoolWriter(
            settings.spool_dir,
            segment_max_bytes=settings.spool_segment_max_bytes,
            segment_max_age_ms=settings.spool_segment_max_age_ms,
            max_bytes=settings.spool_max_bytes,
            fsync_interval_ms=settings.spool_fsync_interval_ms,
            on_fsync=self.metrics.fsync_seconds.observe,
        )
        self.rejected = RejectedStore(
            settings.rejected_dir,
            max_bytes=settings.rejected_max_bytes,
            file_max_bytes=settings.rejected_file_max_bytes,
            on_evict=self.metrics.rejected_evicted.inc,
        )
        self.hash_ip = IpHasher(_secret(settings.data_dir))
        self._max_age_ms = settings.max_event_age_s * 1000
        self._max_skew_ms = settings.max_clock_skew_s * 1000

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Open the spool (recovering torn tails) and count what recovery cut."""
        self.spool.open()
        self.metrics.spool_torn_bytes.inc(self.spool.torn_bytes_cut)

    def stop(self) -> None:
        """Seal the active spool segment (fsynced) and close the rejected store."""
        self.spool.close()
        self.rejected.close()

    def readiness(self) -> list[Check]:
        """Checks for /readyz: spool directory writable, spool under its quota."""
        writable = os.access(self.settings.spool_dir, os.W_OK)
        under = not self.spool.over_quota()
        return [
            Check("spool_writable", writable, str(self.settings.spool_dir)),
            Check("spool_under_quota", under, f"{self.spool.bytes_used}/{self.spool.max_bytes} bytes"),
        ]

    def update_gauges(self) -> None:
        """Refresh the spool gauges before /metrics is rendered."""
        self.metrics.spool_bytes.set(self.spool.bytes_used)
        self.metrics.spool_sealed_segments.set(len(list(self.settings.spool_dir.glob("*.seg"))))

    def routes(self) -> Sequence[BaseRoute]:
        """`POST /collect` (raw ASGI, see `_CollectEndpoint`) and `GET /beacon.js`."""
        return [
            Route("/collect", _CollectEndpoint(self), methods=["POST"]),
            Route("/beacon.js", self.beacon, methods=["GET", "HEAD"]),
        ]

    # -- handlers --------------------------------------------------------------------------
    async def answer(self, receive: Receive, content_type: str | None, content_length: str | None,
                     user_agent: str | None, client_host: str | None) -> HttpAnswer | None:
        """Run one `POST /collect`: parse -> validate -> stamp -> append -> answer.

        Header values are as received (None when absent); `client_host` is the peer address
        (after uvicorn's proxy-header handling), hashed and never stored. Returns the answer,
        or None when the client disconnected before its body arrived (counted, nothing spooled).
        """
        try:
            return await self._collect(receive, content_type, content_length, user_agent, client_host)
        except ClickstreamError as exc:  # the one place a refused request becomes an answer
            exc.extra = {"accepted": 0, "rejected": 0, "errors": [], **exc.extra}  # the shape of POST /collect
            self.metrics.request(exc.status)
            self.metrics.rejected(rejected_reason(exc))
            return exc.answer()
        except ClientDisconnect:  # page unload mid-upload: nobody reads an answer
            self.metrics.client_disconnects.inc()
            return None

    async def _collect(self, receive: Receive, content_type: str | None, content_length: str | None,
                       user_agent: str | None, client_host: str | None) -> HttpAnswer:
        ctype = (content_type or "text/plain").split(";", 1)[0].strip().lower()
        if ctype not in _ACCEPTED_TYPES:
            raise UnsupportedMediaType(f"Content-Type {ctype!r} not accepted: use application/json or text/plain",
                                       code=RejectReason.UNSUPPORTED_MEDIA_TYPE)
        if self.spool.over_quota():
            raise Unavailable("spool over quota; retry later", code=RejectReason.SPOOL_FULL)
        body = await receive_body(receive, content_length, self.settings.max_body_bytes,
                                  code=RejectReason.BODY_TOO_LARGE)
        try:
            events = parse_body(body, self.settings.max_batch_events)
        except ClickstreamError as exc:
            # malformed, empty or oversized batch: the body (<= max_body_bytes) is kept as sent
            self.rejected.add([{"reason": exc.code, "index": None, "path": "",
                                "message": exc.message, "body": body.decode("utf-8", "replace")}])
            raise
        outcome = process(
            events,
            self.validator,
            received_at_ms=int(time.time() * 1000),
            user_agent=(user_agent or "")[:1024],
            ip_hash=self.hash_ip(client_host) if client_host else "",
            max_age_ms=self._max_age_ms,
            max_skew_ms=self._max_skew_ms,
        )
        if outcome.records:
            try:
                position = self.spool.append_block(outcome.ids, outcome.records)
            except SpoolFullError:
                raise Unavailable("spool over quota; retry later", code=RejectReason.SPOOL_FULL) from None
            except (OSError, SpoolError) as exc:  # ENOSPC, EIO, closed at shutdown: back-pressure
                raise Unavailable(f"spool cannot take writes ({exc}); retry later",
                                  code=RejectReason.SPOOL_UNAVAILABLE) from None
            if self.settings.spool_fsync_interval_ms == 0:
                try:
                    await asyncio.to_thread(self.spool.sync_to, position)
                except OSError as exc:  # written but not durable: the client retries (same event_id)
                    raise Unavailable(f"spool cannot fsync ({exc}); retry later",
                                      code=RejectReason.SPOOL_UNAVAILABLE) from None
            self.metrics.events_accepted.inc(len(outcome.records))
        if outcome.errors:
            self.rejected.add(outcome.rejected_entries, body=body)
            for err in outcome.errors:
                self.metrics.rejected(err.reason)
        status = 202 if outcome.records else 400
        self.metrics.request(status)
        payload = orjson.dumps({
            "accepted": len(outcome.records),
            "rejected": len(outcome.errors),
            "errors": [e.as_json() for e in outcome.errors],
        })
        return HttpAnswer(status, [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload))], payload)

    async def beacon(self, request: Request) -> Response:
        """`GET /beacon.js`: the tracker minified (rjsmin), gzip-encoded when the client accepts it,
        cacheable for an hour with an ETag (304 on a match)."""
        try:
            script = beacon_script()
        except FileNotFoundError:
            return Response("beacon.js not found", status_code=404)
        headers = {"Cache-Control": "public, max-age=3600", "ETag": script.etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == script.etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(script.gzipped, media_type="application/javascript",
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(script.minified, media_type="application/javascript", headers=headers)


class BeaconScript(NamedTuple):
    minified: bytes
    gzipped: bytes
    etag: str


@functools.cache
def beacon_script() -> BeaconScript:
    """collector/static/beacon.js minified once per process (readable source in the repo, ~2.9 KB
    gzipped on the wire). Raises FileNotFoundError when the file is missing."""
    source = resources.static("collector", "beacon.js").read_text()
    minified = rjsmin.jsmin(source).encode()
    return BeaconScript(minified, gzip.compress(minified, 9, mtime=0),
                        '"' + hashlib.sha256(minified).hexdigest()[:16] + '"')
