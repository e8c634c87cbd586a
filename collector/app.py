"""The collector's HTTP side: `POST /collect`, `GET /beacon.js`, and its readiness check.

Contract: shared/ARCHITECTURE.md "HTTP". Status mapping lives in one place (`_error_response`):
400 invalid, 413 too large, 415 unsupported media type, 503 + Retry-After for back-pressure.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from clickstream.settings import Settings
from collector.metrics import CollectorMetrics
from collector.pipeline import IpHasher, RequestError, parse_body, process
from collector.rejected import RejectedStore
from collector.spool import SpoolFullError, SpoolWriter
from collector.validation import EventValidator, RejectReason

STATIC_DIR = Path(__file__).resolve().parent / "static"
_JSON = "application/json"
_ACCEPTED_TYPES = ("application/json", "text/plain")


def _secret(data_dir: Path) -> bytes:
    """The data directory's random key for IP hashing (created 0600 on first use)."""
    path = data_dir / ".secret"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        value = secrets.token_bytes(32)
        os.write(fd, value)
        os.close(fd)
        return value


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or BodyTooLarge once more than `limit` bytes are declared or streamed
    (a missing or lying Content-Length cannot get past it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


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
        self.spool.open()
        self.metrics.spool_torn_bytes.inc(self.spool.torn_bytes_cut)

    def stop(self) -> None:
        self.spool.close()
        self.rejected.close()

    def readiness(self) -> list[tuple[str, bool, str]]:
        writable = os.access(self.settings.spool_dir, os.W_OK)
        under = not self.spool.over_quota()
        return [
            ("spool_writable", writable, str(self.settings.spool_dir)),
            ("spool_under_quota", under, f"{self.spool.bytes_used}/{self.spool.max_bytes} bytes"),
        ]

    def update_gauges(self) -> None:
        self.metrics.spool_bytes.set(self.spool.bytes_used)
        self.metrics.spool_sealed_segments.set(len(list(self.settings.spool_dir.glob("*.seg"))))

    def routes(self) -> list[Route]:
        return [
            Route("/collect", self.collect, methods=["POST"]),
            Route("/beacon.js", self.beacon, methods=["GET", "HEAD"]),
        ]

    # -- handlers --------------------------------------------------------------------------
    async def collect(self, request: Request) -> Response:
        try:
            return await self._collect(request)
        except RequestError as exc:
            return self._error_response(exc)

    async def _collect(self, request: Request) -> Response:
        ctype = request.headers.get("content-type", "text/plain").split(";", 1)[0].strip().lower()
        if ctype not in _ACCEPTED_TYPES:
            raise RequestError(415, RejectReason.UNSUPPORTED_MEDIA_TYPE,
                               f"Content-Type {ctype!r} not accepted: use application/json or text/plain")
        if self.spool.over_quota():
            raise RequestError(503, RejectReason.SPOOL_FULL, "spool over quota; retry later")
        try:
            body = await read_body(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            raise RequestError(413, RejectReason.BODY_TOO_LARGE,
                               f"body exceeds {self.settings.max_body_bytes} bytes") from None
        try:
            events = parse_body(body, self.settings.max_batch_events)
        except RequestError as exc:
            if exc.reason is RejectReason.MALFORMED_JSON:
                self.rejected.add([{"reason": exc.reason.value, "index": None, "path": "",
                                    "message": exc.message, "body": body.decode("utf-8", "replace")}])
            raise
        client = request.client
        outcome = process(
            events,
            self.validator,
            received_at_ms=int(time.time() * 1000),
            user_agent=request.headers.get("user-agent", "")[:1024],
            ip_hash=self.hash_ip(client.host) if client else "",
            max_age_ms=self._max_age_ms,
            max_skew_ms=self._max_skew_ms,
        )
        if outcome.records:
            try:
                position = self.spool.append(outcome.records)
            except SpoolFullError:
                raise RequestError(503, RejectReason.SPOOL_FULL, "spool over quota; retry later") from None
            if self.settings.spool_fsync_interval_ms == 0:
                await asyncio.to_thread(self.spool.sync_to, position)
            self.metrics.events_accepted.inc(len(outcome.records))
        if outcome.errors:
            self.rejected.add(outcome.rejected_entries)
            for err in outcome.errors:
                self.metrics.rejected(err.reason)
        status = 202 if outcome.records else 400
        self.metrics.request(status)
        payload = {
            "accepted": len(outcome.records),
            "rejected": len(outcome.errors),
            "errors": [e.as_json() for e in outcome.errors],
        }
        return Response(orjson.dumps(payload), status_code=status, media_type=_JSON)

    def _error_response(self, exc: RequestError) -> Response:
        self.metrics.request(exc.status)
        self.metrics.rejected(exc.reason)
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        payload = {"accepted": 0, "rejected": 0, "errors": [], "error": exc.reason.value, "message": exc.message}
        return Response(orjson.dumps(payload), status_code=exc.status, media_type=_JSON, headers=headers)

    async def beacon(self, request: Request) -> Response:
        path = STATIC_DIR / "beacon.js"
        if not path.exists():
            return Response("beacon.js not built", status_code=404)
        return FileResponse(path, media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=3600"})
