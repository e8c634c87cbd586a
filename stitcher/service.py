"""`POST /stitch`: a conversion becomes a frozen `lead_created` event (docs/architecture.md "HTTP").

Pipeline of one request: authenticate -> read body -> parse and validate -> repeat? (outbox) ->
fresh (flush the spool) -> attribute (ClickHouse; telemetry not there yet: flush and read again
for up to CLICKSTREAM_STITCH_SESSION_WAIT_S, then record it unattributed)
-> build event -> outbox (fsync) -> 201 -> relay.

- Auth: `Authorization: Bearer <CLICKSTREAM_STITCH_TOKEN>`, compared with hmac.compare_digest;
  without a configured token the route answers 503 and says how to set it (never open by default).
- Exactly once: the event id is derived from lead_id (stitcher.event.event_id_for); the event's
  bytes are durable in the outbox before the 201; a repeat of the lead_id with the same request
  gets 200 and the stored bytes, with different data 409 naming the fields. The relay
  (stitcher.relay) delivers to ClickHouse `lead_events` with a dedup token and to the webhook.
- Freshness: in `serve`, the running flusher seals and flushes the spool before attribution is
  read, so a page view acknowledged by /collect before the stitch counts. Concurrent stitches
  share a flush when it started after they arrived. Standalone (`clickstream stitcher`), the
  separate flusher's interval bounds what is seen.

Refusals raise clickstream.core.errors (answered by `Stitcher.handle`, the one place); a client
that disconnects before its body arrived is counted, not answered.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clickstream.core.clickhouse import connect, ping_check
from clickstream.core.component import Check
from clickstream.core.errors import ClickstreamError, Conflict, Disabled, Unauthorized, Unavailable
from clickstream.core.http import ClientDisconnect, bearer_matches, receive_body
from clickstream.core.openapi import Operations, error, json_body, ref, schema_component
from clickstream.core.settings import Settings
from stitcher.attribution import Attributed, attribute
from stitcher.event import build_event, event_id_for
from stitcher.metrics import StitcherMetrics
from stitcher.outbox import Entry, Outbox, Target
from stitcher.relay import ClickHouseDeliverer, Deliverer, Relay, WebhookDeliverer
from stitcher.request import StitchRequest, differing_fields, parse_request

log = logging.getLogger(__name__)

T = TypeVar("T")
#: How long `stop` keeps delivering pending events before leaving them for the next start.
STOP_DRAIN_S = 5.0
#: How often a stitch waiting for the visitor's telemetry flushes and reads again (seconds).
SESSION_POLL_S = 0.2
DISABLED_MESSAGE = (
    "POST /stitch is off: set CLICKSTREAM_STITCH_TOKEN to a long random secret (e.g. `openssl rand -hex 32`) "
    "and restart; the conversion hook sends it as `Authorization: Bearer <token>`"
)


class FreshnessSource(Protocol):
    """What the stitcher needs of the flusher: seal and flush everything spooled so far (blocking)."""

    def flush_now(self) -> int: ...


def stitch_operations() -> Operations:
    """`POST /stitch` for /openapi.json: request schemas/stitch_request.schema.json, answer
    schemas/lead_created.schema.json, bearer authentication."""
    lead = json_body(ref("LeadCreated"), "The lead_created event")
    operation = {
        "summary": "Stitch a conversion into a lead_created event",
        "description": "Server to server, from the application's conversion hook. Contract: "
                       "docs/architecture.md \"HTTP\".",
        "operationId": "stitch",
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": ref("StitchRequest")}}},
        "responses": {
            "201": {**lead, "description": "A new lead_created event (durable in the outbox)"},
            "200": {**lead, "description": "The lead_id was stitched before with the same data: its "
                                           "original event"},
            "400": error("Malformed or invalid body"),
            "401": error("Missing or wrong Authorization: Bearer <CLICKSTREAM_STITCH_TOKEN>"),
            "409": error("The lead_id was stitched before with different data"),
            "413": error("Body over CLICKSTREAM_STITCH_MAX_BODY_BYTES"),
            "503": error("Off (no token configured), or the spool or ClickHouse unavailable; retry",
                         retry_after=True),
        },
    }
    return Operations({"/stitch": {"post": operation}},
                      {"StitchRequest": schema_component("stitch_request.schema.json"),
                       "LeadCreated": schema_component("lead_created.schema.json")},
                      {"bearer": {"type": "http", "scheme": "bearer"}})


def _now_ms() -> int:
    return int(time.time() * 1000)


class Stitcher:
    """The stitcher as a `clickstream.web.create_app` component: routes, start, stop, readiness, gauges.

    `client` is the process's ClickHouse client (pinged for readiness when standalone). The stitcher
    opens two connections of its own to the same URL, one for attribution reads and one for the
    relay's inserts: a clickhouse-connect client is one session, which must not be shared with the
    flusher's thread, and on chDB the relay's insert SETTINGS would leak into a shared session.
    """

    def __init__(self, settings: Settings, client: Client | None, *, flusher: FreshnessSource | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.client = client
        self.flusher = flusher
        self.metrics = StitcherMetrics(registry)
        self.outbox: Outbox | None = None
        self.relay: Relay | None = None
        self._reader: Client | None = None
        self._read_lock = threading.Lock()  # one query at a time per client session
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="stitch-io")
        self._flush_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stitch-flush")
        self._arrivals = itertools.count(1)
        self._flush_lock: asyncio.Lock | None = None
        self._flushed_from = 0  # arrival number at which the last completed flush started

    # -- component lifecycle ---------------------------------------------------------------
    def routes(self) -> list[BaseRoute]:
        return [Route("/stitch", self.handle, methods=["POST"])]

    def openapi(self) -> Operations:
        """`POST /stitch` for /openapi.json (`stitch_operations`)."""
        return stitch_operations()

    def start(self) -> None:
        url = self.settings.resolved_clickhouse_url
        self.outbox = Outbox(self.settings.outbox_dir)
        self._reader = connect(url)
        deliverers: list[Deliverer] = [ClickHouseDeliverer(connect(url))]
        if self.settings.lead_webhook_url:
            deliverers.append(WebhookDeliverer(self.settings.lead_webhook_url,
                                               timeout_s=self.settings.lead_webhook_timeout_s,
                                               secret=self.settings.lead_webhook_secret.get_secret_value()))
        else:
            waiting = self.outbox.count(Target.WEBHOOK)
            if waiting:
                log.warning("stitcher: %d lead(s) await webhook delivery but CLICKSTREAM_LEAD_WEBHOOK_URL is "
                            "not set; they stay pending in %s", waiting, self.outbox.path)
        self.relay = Relay(self.outbox, deliverers, self.metrics, self.settings.relay_retry_max_s)
        self.relay.start()
        if not self.settings.stitch_token.get_secret_value():
            log.warning("stitcher: %s", DISABLED_MESSAGE)

    def stop(self) -> None:
        """Deliver pending events for up to STOP_DRAIN_S, then close (the rest waits in the outbox)."""
        if self.relay is not None:
            self.relay.stop(STOP_DRAIN_S)
        self._io.shutdown(wait=True)
        self._flush_pool.shutdown(wait=False, cancel_futures=True)
        if self.outbox is not None:
            self.outbox.close()
        if self._reader is not None:
            self._reader.close()

    def readiness(self) -> list[Check]:
        directory = self.settings.outbox_dir
        outbox = self.outbox
        writable = (os.access(directory, os.W_OK), str(directory)) if outbox is None else outbox.health.check()
        checks = [Check("outbox_writable", *writable)]
        if self.flusher is None and self.client is not None:  # in serve the flusher reports ClickHouse
            checks.append(ping_check(self.client))
        return checks

    def update_gauges(self) -> None:
        if self.outbox is None:
            return
        for target in Target:
            self.metrics.pending.labels(target=target.value).set(self.outbox.count(target))

    # -- the request pipeline ------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        """POST /stitch: 201 + new event, 200 + original event, or the refusal's answer."""
        try:
            response = await self._stitch(request)
        except ClickstreamError as exc:  # the one place a refusal becomes an answer
            response = exc.response()
        except ClientDisconnect:  # the hook went away before its body arrived: nobody to answer
            self.metrics.client_disconnects.inc()
            return Response(status_code=499)
        self.metrics.requests.labels(status=str(response.status_code)).inc()
        return response

    async def _stitch(self, request: Request) -> Response:
        arrival = next(self._arrivals)
        started = time.perf_counter()
        self._authenticate(request)
        body = await self._read_body(request)
        now_ms = _now_ms()
        stitch = parse_request(body, now_ms=now_ms, max_skew_ms=self.settings.max_clock_skew_s * 1000)
        outbox = self._outbox()
        existing = await self._run(self._io, outbox.get, stitch.lead_id)
        if existing is not None:
            return self._repeat(existing, stitch)
        event = await self._attributed_event(stitch, now_ms, arrival)
        entry = Entry(stitch.lead_id, event_id_for(stitch.lead_id), stitch.fingerprint(), stitch.canonical(), event,
                      now_ms)
        put = functools.partial(outbox.put, entry, webhook=bool(self.settings.lead_webhook_url))
        stored, created = await self._run(self._io, put)
        if not created:  # a concurrent request for the same lead_id won
            return self._repeat(stored, stitch)
        if self.relay is not None:
            self.relay.notify()
        self.metrics.leads_created.inc()
        self.metrics.seconds.observe(time.perf_counter() - started)
        return Response(stored.event, status_code=201, media_type="application/json")

    def _authenticate(self, request: Request) -> None:
        token = self.settings.stitch_token.get_secret_value()
        if not token:
            raise Disabled(DISABLED_MESSAGE)
        if not bearer_matches(request.headers.get("authorization"), token):
            raise Unauthorized("missing or wrong Authorization: Bearer <CLICKSTREAM_STITCH_TOKEN>")

    async def _read_body(self, request: Request) -> bytes:
        return await receive_body(request.receive, request.headers.get("content-length"),
                                  self.settings.stitch_max_body_bytes)

    def _repeat(self, stored: Entry, stitch: StitchRequest) -> Response:
        if hmac.compare_digest(stored.fingerprint, stitch.fingerprint()):
            self.metrics.repeats.inc()
            return Response(stored.event, status_code=200, media_type="application/json")
        self.metrics.conflicts.inc()
        fields = differing_fields(stored.request, stitch)
        raise Conflict(
            f"lead_id {stitch.lead_id!r} was stitched before with different {', '.join(fields)}; its "
            f"lead_created event {stored.event_id} is frozen and was not changed",
            fields=fields, event_id=stored.event_id,
        )

    async def _fresh(self, arrival: int) -> None:
        """Flush the spool (serve only) so that events acknowledged before this request count.

        A flush that started after this request arrived covers it; one that started before may
        have sealed the spool before this visitor's last page view was appended.
        Raises Unavailable when the flush fails or takes over CLICKSTREAM_STITCH_FLUSH_TIMEOUT_S.
        """
        flusher = self.flusher
        if flusher is None:
            return
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        timeout_s = self.settings.stitch_flush_timeout_s
        try:
            async with asyncio.timeout(timeout_s), self._flush_lock:
                if self._flushed_from > arrival:
                    return
                flush_started = next(self._arrivals)
                await self._run(self._flush_pool, flusher.flush_now)
                self._flushed_from = max(self._flushed_from, flush_started)
        except TimeoutError:
            raise Unavailable(f"the spool could not be flushed within {timeout_s} s (ClickHouse slow or down); "
                              "nothing was emitted, retry") from None
        except Exception as exc:
            log.exception("stitcher: flush before attribution failed")
            raise Unavailable(f"the spool could not be flushed ({type(exc).__name__}); nothing was emitted, "
                              "retry") from exc

    async def _attributed_event(self, stitch: StitchRequest, now_ms: int, arrival: int) -> bytes:
        """The lead_created bytes, after waiting (bounded) for telemetry that has not arrived yet.

        The app's hook often calls /stitch while the browser's last batch (sendBeacon on page hide,
        the beacon's 1-second batch) is still in flight. When the visitor has no session yet, the
        named session_id has no event, or the converting session no page view, the stitcher
        flushes and reads again every SESSION_POLL_S until CLICKSTREAM_STITCH_SESSION_WAIT_S has
        passed; then it records the lead with what it has (site from the request, the visitor's sessions or
        CLICKSTREAM_STITCH_DEFAULT_SITE) and counts it (`clickstream_stitcher_unattributed{reason}`).
        Raises Unavailable when a flush or a read fails.
        """
        deadline = time.monotonic() + self.settings.stitch_session_wait_s
        waited = False
        while True:
            await self._fresh(arrival)
            found = await self._run(self._io, self._attribute, stitch, now_ms)
            if found.missing is None or time.monotonic() >= deadline:
                break
            if not waited:
                self.metrics.session_waits.inc()
                waited = True
            await asyncio.sleep(min(SESSION_POLL_S, max(0.0, deadline - time.monotonic())))
            arrival = next(self._arrivals)  # the next flush must start after this point
        if found.missing is not None:
            self.metrics.unattributed.labels(reason=found.missing.value).inc()
            log.warning("stitcher: lead %r recorded without attribution (%s) after waiting %.1f s for the "
                        "visitor's telemetry", stitch.lead_id, found.missing.value,
                        self.settings.stitch_session_wait_s)
        return build_event(stitch, found.attribution, occurred_at_ms=found.occurred_at_ms, emitted_at_ms=_now_ms())

    def _attribute(self, stitch: StitchRequest, now_ms: int) -> Attributed:
        reader = self._reader
        if reader is None:
            raise Unavailable("the stitcher is not started")
        try:
            with self._read_lock:
                return attribute(reader, stitch, now_ms=now_ms,
                                 lookback_days=self.settings.attribution_lookback_days,
                                 max_skew_ms=self.settings.max_clock_skew_s * 1000,
                                 default_site=self.settings.stitch_default_site)
        except Exception as exc:
            log.exception("stitcher: attribution query failed")
            raise Unavailable(f"ClickHouse could not be read ({type(exc).__name__}); nothing was emitted, "
                              "retry") from exc

    def _outbox(self) -> Outbox:
        if self.outbox is None:
            raise Unavailable("the stitcher is not started")
        return self.outbox

    @staticmethod
    async def _run(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
