"""The collector's HTTP side: `POST /collect`, `GET /beacon.js`, and its readiness check.

Contract: docs/architecture.md "HTTP". Refused requests raise clickstream.core.errors
(400 invalid, 413 too large, 415 unsupported media type, 503 + Retry-After for back-pressure),
turned into an answer in one place (`Collector.answer`), with the RejectReason as error code.
A client that disconnects before its body arrived is counted
(`clickstream_client_disconnects_total`) and not answered.

Hot path (BENCHMARKS.md "Collector"): `/collect` is a `RawRoute`, served ahead of Starlette's
middleware for requests without an Origin header; headers are read in one pass; only receiving
the body and the spool write await, the pipeline (`accept`) is synchronous; the all-accepted 202
is pre-encoded; counters are plain ints published at scrape time (collector.metrics); the spool
append is one `write(2)` of one block record per turn of the event loop (`TurnGroup`: the requests
accepted in the same turn share one frame, one CRC and one write, as a database's group commit;
under load that is tens of requests, which the flusher then reads as one record).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import posixpath
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson
import rjsmin
import zopfli.gzip
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from clickstream.core import resources
from clickstream.core.component import Check
from clickstream.core.errors import ClickstreamError, HttpAnswer, TooLarge, Unavailable, UnsupportedMediaType
from clickstream.core.files import WriteHealth
from clickstream.core.http import ClientDisconnect, RawRoute, receive_rest
from clickstream.core.openapi import Operations, error, json_body, ref, schema_component
from clickstream.core.settings import Settings
from clickstream.core.spool import SpoolError, SpoolFullError, SpoolPosition, SpoolWriter
from collector.cookieless import CookielessIds
from collector.metrics import CollectorMetrics
from collector.pipeline import Outcome, parse_body, process, rejected_reason
from collector.rejected import RejectedStore
from collector.salt import DailyHasher, DailySalt
from collector.schemas import EventSchemas
from collector.validation import EVENT_SCHEMA, RejectReason

_JSON_HEADERS = [(b"content-type", b"application/json")]
_ACCEPTED_TYPES = ("application/json", "text/plain")


class TurnGroup:
    """The spool appends of the requests accepted in one turn of the event loop, written as one block
    record (`SpoolWriter.append_group`) by a callback that runs after the turn's other ready tasks.

    `append` returns a future of the position just past the record, which every request of the
    group awaits before it is acknowledged (the write is a `write(2)`, as before: a 202 is sent only
    once its rows are in the page cache). A failed write fails every request of its group with the
    same exception, and none of their rows is spooled (`append_group` writes all or nothing). A
    group is written at once when it reaches `max_bytes` of rows, which keeps a record far below
    clickstream.core.spool.MAX_RECORD_BYTES. Only the event loop's thread may call `append`.
    """

    def __init__(self, spool: SpoolWriter, max_bytes: int = 1 << 20) -> None:
        self.spool = spool
        self.max_bytes = max_bytes
        self._requests: list[tuple[Sequence[bytes], Sequence[bytes], bytes]] = []
        self._waiters: list[asyncio.Future[SpoolPosition]] = []
        self._bytes = 0

    def append(self, ids: Sequence[bytes], rows: Sequence[bytes], members: bytes) -> asyncio.Future[SpoolPosition]:
        """Queue one request's rows (see `SpoolWriter.append_block`); the future resolves to the
        position after the group's record, or raises what the write raised (SpoolFullError,
        SpoolError, OSError, ValueError)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SpoolPosition] = loop.create_future()
        if not self._requests:
            loop.call_soon(self.write)
        self._requests.append((ids, rows, members))
        self._waiters.append(future)
        self._bytes += sum(map(len, rows)) + len(rows) * len(members)
        if self._bytes >= self.max_bytes:
            self.write()
        return future

    def write(self) -> None:
        """Write the queued requests as one record and resolve their futures (nothing queued: no-op)."""
        requests, waiters = self._requests, self._waiters
        if not requests:
            return
        self._requests, self._waiters, self._bytes = [], [], 0
        try:
            position = self.spool.append_group(requests)
        except Exception as exc:  # handed to every request of the group, each answers it
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter in waiters:
            if not waiter.done():  # a request cancelled meanwhile: its rows are spooled, not acknowledged
                waiter.set_result(position)


class _CollectEndpoint:
    """`POST /collect` as a raw ASGI app (Starlette routes to it directly: no Request/Response
    objects on the hot path)."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = content_length = user_agent = origin = None
        for name, value in scope["headers"]:  # ASGI header names are lower-case bytes
            if name == b"content-type":
                content_type = content_type or value.decode("latin-1")
            elif name == b"content-length":
                content_length = content_length or value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = user_agent or value.decode("latin-1")
            elif name == b"origin":
                origin = origin or value.decode("latin-1")
        client = scope.get("client")
        answer = await self.collector.answer(receive, content_type, content_length, user_agent,
                                             client[0] if client else None, origin)
        if answer is None:  # the client is gone: nobody to answer
            return
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": answer.body})


class Collector:
    """Parse, validate, stamp and spool beacon events; owns the spool writer and rejected store."""

    def __init__(self, settings: Settings, metrics: CollectorMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or CollectorMetrics()
        #: every accepted event schema version and the custom event schemas, compiled once
        self.schemas = EventSchemas.from_settings(settings.custom_schemas_path)
        self.spool = SpoolWriter(
            settings.spool_dir,
            segment_max_bytes=settings.spool_segment_max_bytes,
            segment_max_age_ms=settings.spool_segment_max_age_ms,
            max_bytes=settings.spool_max_bytes,
            fsync_interval_ms=settings.spool_fsync_interval_ms,
            on_fsync=self.metrics.fsync_seconds.observe,
        )
        self.group = TurnGroup(self.spool)
        self.rejected = RejectedStore(
            settings.rejected_dir,
            max_bytes=settings.rejected_max_bytes,
            file_max_bytes=settings.rejected_file_max_bytes,
            on_evict=self.metrics.rejected_evicted.inc,
        )
        salt = DailySalt(settings.resolved_salt_dir)
        self.hash_ip = DailyHasher(salt)
        self.cookieless = CookielessIds(DailyHasher(salt, digest_size=12),
                                        max_visitors=settings.cookieless_max_visitors,
                                        on_evict=self.metrics.cookieless_evicted.inc)
        # readiness: the disks under the spool and rejected/ take a request of the largest size
        self.spool_health = WriteHealth(settings.spool_dir, settings.max_body_bytes)
        self.rejected_health = WriteHealth(settings.rejected_dir, settings.max_body_bytes)
        self._max_age_ms = settings.max_event_age_s * 1000
        self._max_skew_ms = settings.max_clock_skew_s * 1000
        self._sites = ({site: frozenset(origins) for site, origins in settings.sites.items()}
                       if settings.sites else None)

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
        """Checks for /readyz: spool and rejected/ writable (room for a request of the largest size, no
        failed write outstanding: clickstream.core.files.WriteHealth), spool under its quota."""
        under = not self.spool.over_quota()
        return [
            Check("spool_writable", *self.spool_health.check()),
            Check("spool_under_quota", under, f"{self.spool.bytes_used}/{self.spool.max_bytes} bytes"),
            Check("rejected_writable", *self.rejected_health.check()),
        ]

    def update_gauges(self) -> None:
        """Publish the counts, refresh the spool and cookieless-session gauges before /metrics is rendered."""
        self.metrics.publish()
        self.metrics.spool_bytes.set(self.spool.bytes_used)
        self.metrics.cookieless_sessions.set(len(self.cookieless))
        self.metrics.spool_sealed_segments.set(len(list(self.settings.spool_dir.glob("*.seg"))))

    def routes(self) -> Sequence[BaseRoute]:
        """`POST /collect` (raw ASGI, see `_CollectEndpoint`) and `GET /beacon.js`, and the same
        under `collect_path` and `script_path` when those are set (first-party proxying)."""
        endpoint = _CollectEndpoint(self)
        routes: list[BaseRoute] = [RawRoute("/collect", endpoint, methods=["POST"])]
        if self.settings.collect_path != "/collect":
            routes.append(RawRoute(self.settings.collect_path, endpoint, methods=["POST"]))
        routes.append(Route("/beacon.js", self.beacon, methods=["GET", "HEAD"]))
        if self.settings.script_path != "/beacon.js":
            routes.append(Route(self.settings.script_path, self.beacon, methods=["GET", "HEAD"]))
        return routes

    def openapi(self) -> Operations:
        """`POST /collect` (and the first-party collect path) for /openapi.json: the event schema
        (schemas/event.schema.json), one event or a batch of 1..max_batch_events."""
        batch = {"type": "array", "minItems": 1, "maxItems": self.settings.max_batch_events, "items": ref("Event")}
        accepted = {
            "type": "object", "required": ["accepted", "rejected", "errors"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0}, "rejected": {"type": "integer", "minimum": 0},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "index": {"type": ["integer", "null"]}, "path": {"type": "string"},
                    "message": {"type": "string"}, "reason": {"type": "string"}}}},
            },
        }
        operation = {
            "summary": "Collect telemetry events",
            "description": "One event or a JSON array of events; Content-Type application/json, or text/plain "
                           "with the same JSON (navigator.sendBeacon). Contract: docs/architecture.md \"HTTP\".",
            "operationId": "collect",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [ref("Event"), batch]}}}},
            "responses": {
                "202": json_body(accepted, "At least one event accepted (in the spool); the others rejected"),
                "400": json_body(accepted, "No event accepted: malformed JSON, empty batch, invalid events"),
                "413": error("Body over CLICKSTREAM_MAX_BODY_BYTES or batch over CLICKSTREAM_MAX_BATCH_EVENTS"),
                "415": error("Content-Type other than application/json or text/plain"),
                "503": error("Spool over its quota or not writable; retry", retry_after=True),
            },
        }
        paths = {path: {"post": {**operation, "operationId": "collect" if path == "/collect" else "collect_proxied"}}
                 for path in dict.fromkeys(("/collect", self.settings.collect_path))}
        return Operations(paths, {"Event": schema_component(EVENT_SCHEMA)})

    # -- handlers --------------------------------------------------------------------------
    async def answer(self, receive: Receive, content_type: str | None, content_length: str | None,
                     user_agent: str | None, client_host: str | None, origin: str | None = None
                     ) -> HttpAnswer | None:
        """Run one `POST /collect`: receive -> parse -> validate -> stamp -> append -> answer.

        Header values are as received (None when absent); `client_host` is the peer address
        (after uvicorn's proxy-header handling), hashed and never stored; `origin` the browser's
        Origin header (checked against the site allowlist, CLICKSTREAM_SITES). Returns the answer,
        or None when the client disconnected before its body arrived (counted, nothing spooled).
        Receiving the body, the spool write of this turn's requests (`append`, `TurnGroup`) and,
        with `spool_fsync_interval_ms=0`, the fsync await; the pipeline before them is synchronous
        (`accept`).
        """
        try:
            if not accepted_media_type(content_type):
                raise UnsupportedMediaType(f"Content-Type {media_type(content_type)!r} not accepted: use "
                                           "application/json or text/plain",
                                           code=RejectReason.UNSUPPORTED_MEDIA_TYPE)
            if self.spool.over_quota():
                raise Unavailable("spool over quota; retry later", code=RejectReason.SPOOL_FULL)
            limit = self.settings.max_body_bytes
            if content_length is not None and content_length.isascii() and content_length.isdigit() \
                and int(content_length) > limit:
                raise TooLarge(f"body exceeds {limit} bytes", code=RejectReason.BODY_TOO_LARGE)
            message = await receive()  # inlined: the whole body in one message is the common case
            if message["type"] != "http.request":
                raise ClientDisconnect
            body = message.get("body", b"")
            if message.get("more_body", False) or len(body) > limit:
                body = await receive_rest(receive, body, limit, code=RejectReason.BODY_TOO_LARGE)
            outcome = self.accept(body, user_agent, client_host, origin)
            position = await self.append(outcome) if outcome.records else None
            if position is not None and self.settings.spool_fsync_interval_ms == 0:
                try:
                    await asyncio.to_thread(self.spool.sync_to, position)
                except OSError as exc:  # written but not durable: the client retries (same event_id)
                    self.spool_health.failed(exc)
                    raise Unavailable(f"spool cannot fsync ({exc}); retry later",
                                      code=RejectReason.SPOOL_UNAVAILABLE) from None
            return self.acknowledge(outcome)
        except ClickstreamError as exc:  # the one place a refused request becomes an answer
            exc.extra = {"accepted": 0, "rejected": 0, "errors": [], **exc.extra}  # the shape of POST /collect
            self.metrics.request(exc.status)
            self.metrics.rejected(rejected_reason(exc))
            return exc.answer()
        except ClientDisconnect:  # page unload mid-upload: nobody reads an answer
            self.metrics.client_disconnects.inc()
            return None

    def accept(self, body: bytes, user_agent: str | None, client_host: str | None, origin: str | None = None
               ) -> Outcome:
        """Parse, validate and stamp a request body; keep its rejected events in rejected/; return
        the outcome, whose accepted events `append` spools. Raises ClickstreamError (the request is
        refused; a malformed body is kept in rejected/)."""
        try:
            events = parse_body(body, self.settings.max_batch_events)
        except ClickstreamError as exc:
            # malformed, empty or oversized batch: the body (<= max_body_bytes) is kept as sent
            self.keep_rejected([{"reason": exc.code, "index": None, "path": "",
                                 "message": exc.message, "body": body.decode("utf-8", "replace")}], body)
            raise
        received_at_ms = int(time.time() * 1000)
        user_agent = (user_agent or "")[:1024]

        def pending(event: dict[str, Any]) -> None:  # consent pending: cookieless ids (collector.cookieless)
            self.cookieless.assign(event, client_host or "", user_agent, received_at_ms)

        outcome = process(
            events,
            self.schemas,
            received_at_ms=received_at_ms,
            user_agent=user_agent,
            ip_hash=self.hash_ip(client_host) if client_host else "",
            max_age_ms=self._max_age_ms,
            max_skew_ms=self._max_skew_ms,
            pending=pending,
            sites=self._sites,
            origin=origin,
        )
        # dead letters first, the spool last: a 503 from either leaves no event of the request spooled
        # (a retry may keep its dead letters twice: replay-rejected and audits key them by event_id)
        self.keep_rejected(outcome.rejected_entries, body)
        return outcome

    async def append(self, outcome: Outcome) -> SpoolPosition:
        """Spool a request's accepted events with the other requests of this turn of the event loop
        (`TurnGroup`) and return the position after their block record. Raises Unavailable (503,
        reason `spool_full` or `spool_unavailable`) when the spool refuses the write: then none of
        the request's events is spooled."""
        try:
            position = await self.group.append(outcome.ids, outcome.records, outcome.stamp)
        except SpoolFullError:
            raise Unavailable("spool over quota; retry later", code=RejectReason.SPOOL_FULL) from None
        except (OSError, SpoolError) as exc:  # ENOSPC, EIO, closed at shutdown: back-pressure
            self.spool_health.failed(exc)
            raise Unavailable(f"spool cannot take writes ({exc}); retry later",
                              code=RejectReason.SPOOL_UNAVAILABLE) from None
        self.spool_health.ok()
        return position

    def keep_rejected(self, entries: list[dict[str, Any]], body: bytes) -> None:
        """Keep dead letters in rejected/. Raises Unavailable (503, reason `rejected_unavailable`) when
        the store cannot write them: a request is never answered while its rejected events are unkept."""
        if not entries:
            return
        try:
            self.rejected.add(entries, body=body)
        except OSError as exc:
            self.rejected_health.failed(exc)
            raise Unavailable(f"rejected/ cannot keep dead letters ({exc}); retry later",
                              code=RejectReason.REJECTED_UNAVAILABLE) from None
        self.rejected_health.ok()

    def acknowledge(self, outcome: Outcome) -> HttpAnswer:
        """Count the outcome (its rejected events were kept by `accept`) and answer: 202 when any
        event was accepted (the all-accepted answer pre-encoded), else 400, with per-event errors."""
        accepted = len(outcome.records)
        if accepted:
            self.metrics.accepted(accepted)
            self.metrics.versions(outcome.versions)
        status = 202 if accepted else 400
        self.metrics.request(status)
        if not outcome.errors:
            return accepted_answer(accepted)
        for err in outcome.errors:
            self.metrics.rejected(err.reason)
        payload = orjson.dumps({
            "accepted": accepted,
            "rejected": len(outcome.errors),
            "errors": [e.as_json() for e in outcome.errors],
        })
        return HttpAnswer(status, [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload))], payload)

    async def beacon(self, request: Request) -> Response:
        """`GET /beacon.js`: the tracker minified (rjsmin), gzip-encoded when the client accepts it,
        cacheable for an hour with an ETag (304 on a match)."""
        script_path = request.url.path
        collect_path = self.settings.collect_path if script_path == self.settings.script_path else "/collect"
        try:
            script = beacon_script(posixpath.relpath(collect_path, posixpath.dirname(script_path)))
        except FileNotFoundError:
            return Response("beacon.js not found", status_code=404)
        headers = {"Cache-Control": "public, max-age=3600", "ETag": script.etag, "Vary": "Accept-Encoding"}
        if request.headers.get("if-none-match") == script.etag:
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(script.gzipped, media_type="application/javascript",
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(script.minified, media_type="application/javascript", headers=headers)


@functools.lru_cache(maxsize=64)
def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header value, lower case (`text/plain` when absent)."""
    return (content_type or "text/plain").split(";", 1)[0].strip().lower()


def accepted_media_type(content_type: str | None) -> bool:
    """True for the media types `POST /collect` reads (JSON and sendBeacon's text/plain)."""
    return media_type(content_type) in _ACCEPTED_TYPES


@functools.lru_cache(maxsize=256)
def accepted_answer(accepted: int) -> HttpAnswer:
    """The 202 of a request whose `accepted` events were all accepted, encoded once per count."""
    body = orjson.dumps({"accepted": accepted, "rejected": 0, "errors": []})
    return HttpAnswer(202, [*_JSON_HEADERS, (b"content-length", b"%d" % len(body))], body)


class BeaconScript(NamedTuple):
    minified: bytes
    gzipped: bytes
    etag: str


#: Where beacon.js names its default collect URL, relative to its own src (`new URL("collect", el.src)`).
COLLECT_MARKER = b'URL("collect",'


@functools.cache
def beacon_script(collect: str = "collect") -> BeaconScript:
    """collector/static/beacon.js minified once per process and collect path (readable source in
    the repo, at most 4 KB gzipped on the wire: BENCHMARKS.md "beacon.js size").

    `collect`: the collect path relative to the script's own path (`../api/e` for a script at
    /js/app.js posting to /api/e); the script resolves it against its `src`, so a reverse proxy
    that mounts both under a prefix of the site keeps them together. Raises FileNotFoundError
    when the file is missing, RuntimeError when the file lost its collect marker.
    """
    source = resources.static("collector", "beacon.js").read_text()
    minified = rjsmin.jsmin(source).encode()
    if minified.count(COLLECT_MARKER) != 1:
        raise RuntimeError(f"beacon.js must contain {COLLECT_MARKER.decode()} exactly once")
    minified = minified.replace(COLLECT_MARKER, b"URL(" + json.dumps(collect).encode() + b",")
    # zopfli: standard gzip, about 1.5 % smaller than zlib's level 9, computed once (~0.1 s)
    return BeaconScript(minified, zopfli.gzip.compress(minified, numiterations=15),
                        '"' + hashlib.sha256(minified).hexdigest()[:16] + '"')
