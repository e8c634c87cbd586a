"""Relay delivery on real parts: chDB `lead_events` exactly once, a real local webhook receiver, and
`clickstream serve` killed with SIGKILL right after a 201."""

from __future__ import annotations

import hashlib
import hmac
import signal
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import connect
from stitcher.attribution import Attribution, Touch
from stitcher.event import build_event, event_id_for
from stitcher.metrics import StitcherMetrics
from stitcher.outbox import Entry, Outbox, State, Target
from stitcher.relay import ClickHouseDeliverer, Relay, WebhookDeliverer
from stitcher.request import parse_request
from tests.conftest import SCHEMAS_DIR, Server, make_event, now_ms, sql_rows, wait_for

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
LEAD_SCHEMA = orjson.loads((SCHEMAS_DIR / "lead_created.schema.json").read_bytes())




class Receiver:
    """A real HTTP server standing in for the application's webhook; answers `plan` then `status`."""

    def __init__(self, status: int = 200, plan: list[int] | None = None) -> None:
        self.status = status
        self.plan = list(plan or [])
        self.calls: list[tuple[int, dict[str, str], bytes]] = []  # (answered status, headers, body)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    status = receiver.plan.pop(0) if receiver.plan else receiver.status
                    receiver.calls.append((status, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/lead"

    def delivered(self) -> list[tuple[int, dict[str, str], bytes]]:
        with self.lock:
            return [c for c in self.calls if 200 <= c[0] < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def lead(lead_id: str, anonymous_id: str = "visitor-1") -> Entry:
    request = parse_request(orjson.dumps({"lead_id": lead_id, "anonymous_id": anonymous_id}),
                            now_ms=now_ms(), max_skew_ms=0)
    touch = Touch("newsletter", "email", "june", "", "", "", "email", "/pricing", now_ms() - 60_000)
    attribution = Attribution("example.com", "s1", "/pricing", touch, touch, {"hero": "B"})
    event = build_event(request, attribution, occurred_at_ms=now_ms(), emitted_at_ms=now_ms())
    return Entry(lead_id, event_id_for(lead_id), request.fingerprint(), request.canonical(), event, now_ms())


# -- ClickHouse: a redelivery is dropped ---------------------------------------------------------
@pytest.fixture
def client(chdb_client: Client) -> Client:
    return chdb_client


def test_redelivered_event_is_stored_and_counted_once(client: Client) -> None:
    entry = lead("L-dup")
    deliverer = ClickHouseDeliverer(client)
    deliverer.deliver(entry)
    deliverer.deliver(entry)  # the relay crashed before it marked the first delivery
    rows = client.query("SELECT event_id, payload, first_touch.channel, variants FROM lead_events").result_rows
    assert [(str(r[0]), r[1].encode(), r[2], r[3]) for r in rows] == [
        (entry.event_id, entry.event, "email", {"hero": "B"})
    ]
    conversions = client.query("SELECT sum(leads), count() FROM conversions").result_rows
    assert conversions == [(1, 1)]


# -- webhook ------------------------------------------------------------------------------------
def test_webhook_retries_until_accepted_with_one_idempotency_key_and_signature(tmp_path: Path) -> None:
    r = Receiver(plan=[500, 503, 429], status=200)
    outbox = Outbox(tmp_path / "outbox")
    metrics = StitcherMetrics()
    relay = Relay(outbox, [WebhookDeliverer(r.url, timeout_s=5, secret="s3cret")], metrics, retry_max_s=0.05)
    relay.start()
    try:
        entry = lead("L-hook")
        outbox.put(entry, webhook=True)
        relay.notify()
        wait_for(r.delivered, what="an accepted delivery")
    finally:
        relay.stop(5)
        r.close()
    assert [c[0] for c in r.calls] == [500, 503, 429, 200]
    for _, headers, body in r.calls:
        assert headers["idempotency-key"] == entry.event_id
        assert headers["clickstream-schema"] == "lead_created/1-0-0"  # the body's `schema`, short
        assert body == entry.event
        assert headers["x-clickstream-signature"] == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert outbox.count(Target.WEBHOOK) == 0
    assert metrics.retries.labels(target="webhook")._value.get() == 3
    outbox.close()


def test_webhook_refusal_is_kept_as_failed_and_does_not_block_later_leads(tmp_path: Path) -> None:
    r = Receiver(plan=[400], status=200)
    outbox = Outbox(tmp_path / "outbox")
    relay = Relay(outbox, [WebhookDeliverer(r.url, timeout_s=5)], StitcherMetrics(), retry_max_s=0.05)
    outbox.put(lead("L-a"), webhook=True)
    outbox.put(lead("L-b"), webhook=True)
    relay.start()
    try:
        wait_for(r.delivered, what="the second lead")
    finally:
        relay.stop(5)
        r.close()
    assert [(c[0], orjson.loads(c[2])["lead_id"]) for c in r.calls] == [(400, "L-a"), (200, "L-b")]
    assert outbox.count(Target.WEBHOOK, State.FAILED) == 1
    assert outbox.count(Target.WEBHOOK, State.DELIVERED) == 1
    outbox.close()


# -- the crash ------------------------------------------------------------------------------------


def test_sigkill_right_after_201_then_restart_delivers_once_to_clickhouse_and_at_least_once_to_webhook(
    server_factory: Callable[..., Server], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.status = 500
    env = {"stitch_token": "tok", "sql_password": "adm", "lead_webhook_url": receiver.url,
           "relay_retry_max_s": "0.2"}
    data_dir = tmp_path / "data"
    first = server_factory("serve", data_dir=data_dir, **env)
    http = first.client(headers={"User-Agent": UA})
    landing = make_event(anonymous_id="crash-visitor", session_id="crash-s1",
                         url="https://example.com/demo?utm_source=linkedin&utm_medium=paid_social&utm_campaign=q3",
                         variants={"hero": "B"})
    assert http.post("/collect", json=landing).status_code == 202
    stitch = {"lead_id": "crash-lead", "anonymous_id": "crash-visitor", "properties": {"form": "demo"}}
    created = http.post("/stitch", json=stitch, headers={"Authorization": "Bearer tok"})
    first.proc.send_signal(signal.SIGKILL)  # right after the 201: no drain, no shutdown hook
    first.proc.wait()
    assert created.status_code == 201, created.text
    event = orjson.loads(created.content)
    jsonschema.Draft202012Validator(LEAD_SCHEMA).validate(event)
    assert event["event_id"] == event_id_for("crash-lead")
    assert event["last_touch"]["utm_campaign"] == "q3" and event["variants"] == {"hero": "B"}

    receiver.status = 200
    second = server_factory("serve", data_dir=data_dir, **env)
    wait_for(receiver.delivered, what="the webhook delivery after the restart")
    for status, headers, body in receiver.calls:  # every attempt, refused or accepted: the same event
        assert headers["idempotency-key"] == event["event_id"]
        assert body == created.content, status
    repeat = second.client().post("/stitch", json=stitch, headers={"Authorization": "Bearer tok"})
    assert (repeat.status_code, repeat.content) == (200, created.content)
    wait_for(lambda: 'clickstream_stitcher_relay_pending{target="clickhouse"} 0.0'
             in second.client().get("/metrics").text, what="the relay to drain")
    query = "SELECT count(), any(payload) FROM lead_events WHERE lead_id = 'crash-lead'"
    assert sql_rows(second, query) == [[1, created.content.decode()]]
    assert second.stop() in (0, -signal.SIGTERM)
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    try:
        assert client.query(query).result_rows == [(1, created.content.decode())]
        assert client.query("SELECT sum(leads) FROM conversions WHERE anonymous_id = 'crash-visitor'"
                            ).result_rows == [(1,)]
    finally:
        client.close()
