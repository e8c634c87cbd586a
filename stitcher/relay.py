"""The relay: outbox -> ClickHouse `lead_events` (exactly once) and -> the application's webhook (at least once).

One thread ("lane") per target, each delivering pending outbox entries oldest first:
- `clickhouse`: `INSERT INTO lead_events FORMAT JSONEachRow` of one event with
  `insert_deduplication_token = event_id`. A redelivery (crash between insert and the outbox
  update) is dropped by ClickHouse, in `lead_events` and, thanks to the window there too, in
  `conversions` (sql/0004_lead_events.sql). One insert per event: a batch's token would change with
  its composition after a crash, and leads are few.
- `webhook` (only when CLICKSTREAM_LEAD_WEBHOOK_URL is set): `POST` of the exact event bytes with
  `Idempotency-Key: <event_id>` (IETF draft-ietf-httpapi-idempotency-key-header),
  `Clickstream-Schema: lead_created/1-0-0` (the short name of the event's `schema` URI, so a
  consumer can route by version before parsing; docs/schema-versioning.md), and, when
  CLICKSTREAM_LEAD_WEBHOOK_SECRET is set, `X-Clickstream-Signature: sha256=<hex HMAC of the body>`.
  2xx is delivered; 408, 425, 429, 5xx and connection errors are retried; any other status is a
  refusal, kept in the outbox as failed and counted.
Transient errors are retried with capped, jittered exponential backoff (tenacity
`wait_random_exponential`, cap CLICKSTREAM_RELAY_RETRY_MAX_S), in order: a later event waits behind
an earlier one (the receiver sees leads in stitch order).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from typing import Protocol

import httpx
import orjson
from clickhouse_connect.driver.client import Client
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_when_event_set, wait_random_exponential

from clickstream.core.clickhouse import INSERT_SETTINGS, error_code, is_data_error
from clickstream.core.resources import version
from stitcher.event import lead_events_row, schema_name
from stitcher.metrics import StitcherMetrics
from stitcher.outbox import Entry, Outbox, State, Target

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429})


class DeliveryRefused(Exception):
    """The target refused the event for good: retrying the same bytes cannot succeed."""


class Deliverer(Protocol):
    """One relay target: deliver an outbox entry or raise (DeliveryRefused, or anything transient)."""

    target: Target

    def deliver(self, entry: Entry) -> None: ...

    def close(self) -> None: ...


class ClickHouseDeliverer:
    """Inserts events into `lead_events` with the event id as dedup token."""

    target = Target.CLICKHOUSE

    def __init__(self, client: Client) -> None:
        self.client = client
        self._lock = threading.Lock()

    def deliver(self, entry: Entry) -> None:
        row = lead_events_row(entry.event)
        try:
            with self._lock:
                self.client.raw_insert("lead_events", None, row, fmt="JSONEachRow",
                                       settings={**INSERT_SETTINGS, "insert_deduplication_token": entry.event_id})
        except Exception as exc:
            if is_data_error(exc):
                raise DeliveryRefused(f"ClickHouse code {error_code(exc)}: {exc}") from exc
            raise

    def close(self) -> None:
        self.client.close()


class WebhookDeliverer:
    """POSTs events to the application's webhook URL."""

    target = Target.WEBHOOK

    def __init__(self, url: str, *, timeout_s: float, secret: str = "") -> None:
        self.url = url
        self.secret = secret.encode()
        self.http = httpx.Client(timeout=timeout_s, follow_redirects=False,
                                 headers={"User-Agent": f"clickstream-stitcher/{version()}"})

    def deliver(self, entry: Entry) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": entry.event_id,
                   "Clickstream-Schema": schema_name(orjson.loads(entry.event)["schema"])}
        if self.secret:
            digest = hmac.new(self.secret, entry.event, hashlib.sha256).hexdigest()
            headers["X-Clickstream-Signature"] = f"sha256={digest}"
        response = self.http.post(self.url, content=entry.event, headers=headers)
        status = response.status_code
        if 200 <= status < 300:
            return
        message = f"webhook answered {status}: {response.text[:200]}"
        if status >= 500 or status in RETRYABLE_STATUS:
            raise httpx.HTTPStatusError(message, request=response.request, response=response)
        raise DeliveryRefused(message)

    def close(self) -> None:
        self.http.close()


class Lane:
    """A thread delivering one target's pending entries until stopped."""

    def __init__(self, outbox: Outbox, deliverer: Deliverer, metrics: StitcherMetrics, retry_max_s: float,
                 halt: threading.Event, closing: threading.Event) -> None:
        self.outbox = outbox
        self.deliverer = deliverer
        self.metrics = metrics
        self.retry_max_s = retry_max_s
        self.halt = halt  # stop now, even mid-retry
        self.closing = closing  # stop once nothing is pending
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"relay-{deliverer.target.value}", daemon=True)

    def _run(self) -> None:
        target = self.deliverer.target
        while not self.halt.is_set():
            try:
                batch = self.outbox.pending(target)
            except Exception:
                log.exception("relay %s: cannot read the outbox", target.value)
                self.halt.wait(1.0)
                continue
            if not batch:
                if self.closing.is_set():
                    return
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            for entry in batch:
                try:
                    if not self._deliver(entry):
                        return
                except Exception:  # the outbox cannot record the delivery (disk full): it stays pending and
                    # is delivered again later, deduplicated by its token; the relay thread lives on
                    log.exception("relay %s: cannot record lead %s in the outbox", target.value, entry.lead_id)
                    self.halt.wait(1.0)
                    break

    def _sleep(self, seconds: float) -> None:
        self.halt.wait(seconds)  # a halt interrupts the backoff

    def _deliver(self, entry: Entry) -> bool:
        """Deliver one entry (retrying transient errors); False when halted before it succeeded."""
        target = self.deliverer.target

        def note(state: RetryCallState) -> None:
            self.metrics.retries.labels(target=target.value).inc()
            error = state.outcome.exception() if state.outcome else None
            self.outbox.note_attempt(entry.lead_id, f"{target.value}: {error}")
            log.warning("relay %s: lead %s attempt %d failed: %s", target.value, entry.lead_id,
                        state.attempt_number, error)

        retrying = Retrying(
            retry=retry_if_exception(lambda e: not isinstance(e, DeliveryRefused)),
            wait=wait_random_exponential(multiplier=0.1, max=self.retry_max_s),
            stop=stop_when_event_set(self.halt),
            sleep=self._sleep,
            before_sleep=note,
            reraise=True,
        )
        try:
            retrying(self.deliverer.deliver, entry)
        except DeliveryRefused as exc:
            self.outbox.mark(entry.lead_id, target, State.FAILED, str(exc))
            self.metrics.failures.labels(target=target.value).inc()
            log.error("relay %s: lead %s refused for good, kept in the outbox as failed: %s", target.value,
                      entry.lead_id, exc)
            return True
        except Exception as exc:  # only reached once halted: the entry stays pending
            log.warning("relay %s: stopped before lead %s was delivered (%s); it stays pending", target.value,
                        entry.lead_id, exc)
            return False
        self.outbox.mark(entry.lead_id, target, State.DELIVERED)
        self.metrics.deliveries.labels(target=target.value).inc()
        return True


class Relay:
    """The lanes of every configured target; `notify` after each new outbox entry."""

    def __init__(self, outbox: Outbox, deliverers: list[Deliverer], metrics: StitcherMetrics,
                 retry_max_s: float) -> None:
        self.outbox = outbox
        self.deliverers = deliverers
        self._halt = threading.Event()
        self._closing = threading.Event()
        self.lanes = [Lane(outbox, d, metrics, retry_max_s, self._halt, self._closing) for d in deliverers]

    def start(self) -> None:
        for lane in self.lanes:
            lane.thread.start()

    def notify(self) -> None:
        for lane in self.lanes:
            lane.wake.set()

    def stop(self, drain_timeout_s: float) -> None:
        """Deliver what is pending for at most `drain_timeout_s`, then stop; the rest stays pending
        in the outbox and is delivered after the next start."""
        self._closing.set()
        self.notify()
        timer = threading.Timer(drain_timeout_s, self._halt.set)
        timer.daemon = True
        timer.start()
        for lane in self.lanes:
            if lane.thread.is_alive():
                lane.thread.join()
        timer.cancel()
        self._halt.set()
        for deliverer in self.deliverers:
            deliverer.close()
