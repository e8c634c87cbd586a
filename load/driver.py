"""`clickstream load`: drive generated traffic at a running collector over HTTP, keep a ledger.

Requests are cut from the time-ordered events the way browsers send them: one User-Agent per
request, batch sizes drawn from {1, 1, 1, 5, 10, 50} (single-event requests are the common case),
`application/json` or `text/plain` (sendBeacon) bodies, and invalid events mixed into some batches.
Rate control is open loop (the schedule does not wait for answers, up to `concurrency` requests in
flight), so a slow collector shows up as latency and schedule lag instead of a lower offered rate.
A 503 is retried after its Retry-After with the same body (nothing was spooled); a lost answer is
retried too, which the flusher's event_id dedup makes safe. HTTP client: aiohttp (httpx's async pool
served ~230 requests/s with 16 concurrent requests here, aiohttp ~3,800).

The ledger keeps every acknowledged event_id and every rejected one with its reason, for the audit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from load.model import Lead, Traffic

BATCH_SIZES = (1, 1, 1, 5, 10, 50)


@dataclasses.dataclass
class Request:
    events: list[dict[str, Any]]
    agent: str
    content_type: str
    invalid_indexes: frozenset[int]


@dataclasses.dataclass
class Ledger:
    """What the collector and stitcher acknowledged during a run."""

    accepted: set[str] = dataclasses.field(default_factory=set)
    rejected: dict[str, str] = dataclasses.field(default_factory=dict)  # event_id -> reason
    unexpected: list[str] = dataclasses.field(default_factory=list)  # answers that contradict the model
    requests: int = 0
    retries: int = 0
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    sent_at_s: list[float] = dataclasses.field(default_factory=list)  # per latency: when the attempt began, s
    origin_s: float = 0.0  # time.perf_counter() at the start of sending: sent_at_s is relative to it
    unanswered_attempts: int = 0  # attempts that got no answer (connection refused or reset, timeout)
    unanswered_events: int = 0  # events in those attempts: each one may or may not have been spooled
    abandoned: set[str] = dataclasses.field(default_factory=set)  # event ids never answered after every retry
    stitched: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # lead_id -> event
    timeline: list[tuple[float, int]] = dataclasses.field(default_factory=list)  # (elapsed s, events acked)
    max_schedule_lag_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)

        def pct(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else 0.0

        return {"requests": self.requests, "retries": self.retries, "accepted": len(self.accepted),
                "unanswered_attempts": self.unanswered_attempts, "unanswered_events": self.unanswered_events,
                "abandoned": len(self.abandoned),
                "rejected": len(self.rejected), "unexpected": self.unexpected[:20], "leads": len(self.stitched),
                "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
                "max_schedule_lag_s": round(self.max_schedule_lag_s, 3)}


def plan_requests(traffic: Traffic, seed: int) -> list[Request]:
    """Cut the traffic into requests (deterministic for a seed)."""
    rng = random.Random(seed * 7919 + 1)
    invalid = list(traffic.invalid)
    requests: list[Request] = []
    i = 0
    events = traffic.events
    while i < len(events):
        size = rng.choice(BATCH_SIZES)
        agent = events[i][1]
        batch: list[dict[str, Any]] = []
        while i < len(events) and len(batch) < size and events[i][1] == agent:
            batch.append(events[i][0])
            i += 1
        bad: set[int] = set()
        if invalid and rng.random() < 0.05:
            event, _ = invalid.pop()
            bad.add(len(batch))
            batch.append(event)
        requests.append(Request(batch, agent, rng.choice(("application/json", "text/plain;charset=UTF-8")),
                                frozenset(bad)))
    for event, _ in invalid:  # the rest go alone: an all-invalid request must answer 400
        requests.append(Request([event], "Mozilla/5.0 clickstream-load", "application/json", frozenset({0})))
    return requests


async def _post(http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes,
                                                                                                   str]:
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.read(), response.headers.get("retry-after", "1")


async def _send(http: aiohttp.ClientSession, url: str, req: Request, ledger: Ledger, started_at: float = 0.0) -> None:
    body = orjson.dumps(req.events[0] if len(req.events) == 1 and not req.invalid_indexes else req.events)
    headers = {"Content-Type": req.content_type, "User-Agent": req.agent}
    for attempt in range(30):
        started = time.perf_counter()
        try:
            status, content, retry_after = await _post(http, f"{url}/collect", body, headers)
        except (TimeoutError, aiohttp.ClientError):
            ledger.retries += 1
            ledger.unanswered_attempts += 1
            ledger.unanswered_events += len(req.events)
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
            continue
        ledger.latencies_s.append(time.perf_counter() - started)
        ledger.sent_at_s.append(started - started_at)
        if status == 503:
            ledger.retries += 1
            await asyncio.sleep(float(retry_after))
            continue
        ledger.requests += 1
        if status not in (202, 400):
            ledger.unexpected.append(f"HTTP {status}: {content[:200]!r}")
            return
        answer = orjson.loads(content)
        errors = {e["index"]: e for e in answer["errors"]}
        if set(errors) != set(req.invalid_indexes):
            ledger.unexpected.append(f"rejected indexes {sorted(errors)} != invalid {sorted(req.invalid_indexes)}")
        for index, event in enumerate(req.events):
            if index in errors:
                ledger.rejected[event.get("event_id", f"?{index}")] = errors[index]["reason"]
            else:
                ledger.accepted.add(event["event_id"])
        return
    ledger.abandoned.update(str(e.get("event_id")) for e in req.events)
    ledger.unexpected.append("request abandoned after 30 attempts")


async def _stitch(http: aiohttp.ClientSession, url: str, token: str, lead: Lead, ledger: Ledger) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for attempt in range(60):  # about 2 minutes: a stitcher restarted after a crash is back by then
        try:
            status, content, _ = await _post(http, f"{url}/stitch", orjson.dumps(lead.body()), headers)
        except (TimeoutError, aiohttp.ClientError):
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
            continue
        if status >= 500:
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
            continue
        if status not in (200, 201):
            ledger.unexpected.append(f"stitch {lead.lead_id}: HTTP {status} {content[:200]!r}")
            return
        ledger.stitched[lead.lead_id] = orjson.loads(content)
        return
    ledger.unexpected.append(f"stitch {lead.lead_id} abandoned")


async def drive(
    url: str,
    traffic: Traffic,
    *,
    seed: int = 1,
    rate: float | None = None,
    concurrency: int = 32,
    stitch_token: str = "",
    progress: Callable[[int], None] | None = None,
) -> Ledger:
    """Send every planned request (open loop at `rate` events/s, or as fast as `concurrency`
    allows when None), then every lead to /stitch when `stitch_token` is set."""
    ledger = Ledger()
    requests = plan_requests(traffic, seed)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        ledger.origin_s = started
        sent_events = 0

        async def one(req: Request) -> None:
            try:
                await _send(http, url, req, ledger, started)
            finally:
                slots.release()
                if progress is not None:
                    progress(len(req.events))
                ledger.timeline.append((time.perf_counter() - started, len(ledger.accepted)))

        for req in requests:
            if rate:
                due = started + sent_events / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    ledger.max_schedule_lag_s = max(ledger.max_schedule_lag_s, -delay)
            await slots.acquire()
            task = asyncio.create_task(one(req))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent_events += len(req.events)
        await asyncio.gather(*list(tasks))
        if stitch_token:
            sem = asyncio.Semaphore(8)

            async def stitch(lead: Lead) -> None:
                async with sem:
                    await _stitch(http, url, stitch_token, lead, ledger)

            await asyncio.gather(*(stitch(lead) for lead in traffic.leads))
    return ledger
