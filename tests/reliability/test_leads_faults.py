"""Suite 4, leads under faults, on a real `clickstream serve` (real chDB, spool, outbox, relay) and a
real webhook receiver.

- Retries and kills: every lead's stitch hook is called 1-5 times (the client's retries), and
  `serve` is SIGKILLed right after a 201 (between the answer and the relay's deliveries) and
  restarted on the same directory. Then: exactly one row per lead in `lead_events` (a plain
  MergeTree: ClickHouse refuses FINAL there, a duplicate would be a row) and one lead per visitor in
  its roll-up `conversions`, with and without FINAL; its payload byte for byte the first answer
  (attribution frozen at the first answer); the webhook received every lead at least once, every
  delivery with the lead's event id as Idempotency-Key and the first answer's bytes.
- The stitch races the beacon: the hook calls /stitch before the visitor's page view reached the
  collector; the stitcher waits (CLICKSTREAM_STITCH_SESSION_WAIT_S) and attributes it. A session that
  never comes: the lead is recorded anyway, unattributed and counted.

CI size by default; RELIABILITY_FULL=1 for the full size (more leads, 20 kills).
"""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from stitcher.event import event_id_for
from tests.conftest import Server, make_event, now_ms, sql_rows, start_server, wait_for
from tests.reliability.leads_support import Webhook, metric, report, size

#: The full size (RELIABILITY_FULL=1) takes minutes on 2 shared cores; CI size well under the default.
pytestmark = pytest.mark.timeout(1800)

TOKEN = "leads-faults-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    yield hook
    hook.stop()


def serve(data_dir: Path, **env: str) -> Server:
    return start_server("serve", data_dir, {
        "CLICKSTREAM_STITCH_TOKEN": TOKEN, "CLICKSTREAM_SQL_PASSWORD": "leads", "CLICKSTREAM_RELAY_RETRY_MAX_S": "0.5",
        "CLICKSTREAM_SPOOL_FSYNC_INTERVAL_MS": "0", **{f"CLICKSTREAM_{k.upper()}": v for k, v in env.items()},
    })


def collect(server: Server, *events: dict[str, Any]) -> None:
    answer = httpx.post(server.url + "/collect", json=list(events), headers={"User-Agent": UA}, timeout=30)
    assert answer.status_code == 202 and answer.json()["rejected"] == 0, answer.text


def stitch(server: Server, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + "/stitch", content=orjson.dumps(body), headers=AUTH, timeout=60)


def outbox_states(data_dir: Path, lead_id: str) -> tuple[str, str]:
    """(clickhouse_state, webhook_state) of a lead in the outbox of a stopped process."""
    with sqlite3.connect(data_dir / "outbox" / "outbox.sqlite3") as db:
        row = db.execute("SELECT clickhouse_state, webhook_state FROM leads WHERE lead_id = ?", (lead_id,)).fetchone()
    assert row is not None, f"lead {lead_id} acknowledged (201) but not in the outbox"
    return str(row[0]), str(row[1])


def test_retried_hooks_and_kills_between_201_and_relay_give_one_row_per_lead(
        tmp_path: Path, webhook: Webhook) -> None:
    leads = size(24, 200)
    kills_wanted = size(4, 20)
    rng = random.Random(12)
    data_dir = tmp_path / "data"
    server = serve(data_dir, lead_webhook_url=webhook.url)
    webhook.down = True  # until the last kill: every kill leaves the lead's webhook delivery pending
    kill_at = set(rng.sample(range(leads), kills_wanted))
    first: dict[str, bytes] = {}
    calls = 0
    pending_at_kill = {"clickhouse": 0, "webhook": 0}
    states_at_kill: list[tuple[str, str]] = []
    try:
        for i in range(leads):
            lead_id, visitor = f"lead-{i}", f"visitor-{i}"
            campaign = f"campaign-{i}"
            collect(server, make_event(anonymous_id=visitor, session_id=f"s-{i}", ts=now_ms() - 1000,
                                       url=f"https://example.com/lp/{i}?utm_source=ads&utm_campaign={campaign}"))
            body = {"lead_id": lead_id, "anonymous_id": visitor, "session_id": f"s-{i}", "properties": {"n": i}}
            retries = rng.randint(1, 5)
            for attempt in range(retries):
                answer = stitch(server, body)
                calls += 1
                assert answer.status_code == (201 if attempt == 0 else 200), answer.text
                first.setdefault(lead_id, answer.content)
                assert answer.content == first[lead_id]
                if attempt == 0 and i in kill_at:
                    server.stop(signal.SIGKILL)  # right after the 201: the relay may not have run
                    states = outbox_states(data_dir, lead_id)
                    states_at_kill.append(states)
                    pending_at_kill["clickhouse"] += states[0] == "pending"
                    pending_at_kill["webhook"] += states[1] == "pending"
                    server = serve(data_dir, lead_webhook_url=webhook.url)
            event = orjson.loads(first[lead_id])
            assert (event["session_id"], event["landing_path"], event["first_touch"]["utm_campaign"]) == (
                f"s-{i}", f"/lp/{i}", campaign), event
        # after the last kill: the relay delivers what was pending at each kill
        webhook.down = False
        wait_for(lambda: metric(server.client().get("/metrics").text, "clickstream_stitcher_relay_pending",
                                target="clickhouse") == 0 and len(webhook.by_key()) == leads,
                 120, "the relay to deliver every lead")
        per_lead = dict(sql_rows(server, "SELECT lead_id, count() FROM lead_events GROUP BY lead_id"))
        # lead_events is a plain MergeTree (ClickHouse refuses FINAL on it: nothing to collapse, a
        # duplicate would be a row); FINAL applies to its roll-up `conversions` (AggregatingMergeTree)
        conversions = dict(sql_rows(server, "SELECT anonymous_id, sum(leads) FROM conversions GROUP BY anonymous_id"))
        conversions_final = dict(sql_rows(server, "SELECT anonymous_id, leads FROM conversions FINAL"))
        payloads = dict(sql_rows(server, "SELECT lead_id, payload FROM lead_events"))
    finally:
        server.stop()
    assert per_lead == {lead_id: 1 for lead_id in first}
    assert conversions == conversions_final == {f"visitor-{i}": 1 for i in range(leads)}
    assert {k: v.encode() for k, v in payloads.items()} == first
    delivered = webhook.by_key()
    assert set(delivered) == {event_id_for(lead_id) for lead_id in first}
    for lead_id, answer_bytes in first.items():
        assert set(delivered[event_id_for(lead_id)]) == {answer_bytes}, lead_id
    assert pending_at_kill["webhook"] == kills_wanted  # the webhook was down: each kill left one pending
    assert len(delivered[event_id_for("lead-0")]) >= 2  # refused while down, delivered again after
    report("leads_faults", leads=leads, stitch_calls=calls, kills=kills_wanted,
           pending_at_kill=pending_at_kill, rows_per_lead=1, conversions_per_visitor_final=1,
           webhook_deliveries=sum(len(v) for v in delivered.values()),
           webhook_redeliveries=sum(len(v) - 1 for v in delivered.values()))


def test_the_stitch_waits_for_a_page_view_still_in_flight(tmp_path: Path) -> None:
    """The hook's /stitch arrives first; the visitor's page view 1 s later: the lead is attributed to it."""
    server = serve(tmp_path / "data", stitch_session_wait_s="10")
    answers: list[httpx.Response] = []
    try:
        hook = threading.Thread(target=lambda: answers.append(stitch(server, {
            "lead_id": "L-race", "anonymous_id": "racer", "session_id": "race-s", "site_id": "example.com"})))
        hook.start()
        time.sleep(1.0)  # the beacon's batch still in flight
        collect(server, make_event(anonymous_id="racer", session_id="race-s",
                                   url="https://example.com/landing?utm_source=ads&utm_campaign=race"))
        hook.join(60)
        metrics = server.client().get("/metrics").text
    finally:
        server.stop()
    assert answers and answers[0].status_code == 201, answers
    event = orjson.loads(answers[0].content)
    assert (event["session_id"], event["landing_path"], event["first_touch"]["utm_campaign"]) == (
        "race-s", "/landing", "race")
    assert metric(metrics, "clickstream_stitcher_session_waits_total") == 1
    assert metric(metrics, "clickstream_stitcher_unattributed_total", reason="session_not_seen") == 0


def test_a_session_that_never_arrives_is_recorded_unattributed_and_counted(tmp_path: Path) -> None:
    server = serve(tmp_path / "data", stitch_session_wait_s="0.6", stitch_default_site="fallback.example")
    try:
        collect(server, make_event(anonymous_id="known", session_id="old-s",
                                   url="https://example.com/first?utm_source=ads&utm_campaign=old"))
        named = stitch(server, {"lead_id": "L-late", "anonymous_id": "known", "session_id": "never-s"})
        nobody = stitch(server, {"lead_id": "L-nobody", "anonymous_id": "stranger"})
        again = stitch(server, {"lead_id": "L-nobody", "anonymous_id": "stranger"})
        metrics = server.client().get("/metrics").text
    finally:
        server.stop()
    assert (named.status_code, nobody.status_code, again.status_code) == (201, 201, 200)
    late, ghost = orjson.loads(named.content), orjson.loads(nobody.content)
    # what is known stays: the visitor's earlier campaign; the converting session is the one named
    assert (late["site_id"], late["session_id"], late["landing_path"], late["first_touch"]["utm_campaign"]) == (
        "example.com", "never-s", "", "old")
    assert (ghost["site_id"], ghost["session_id"], ghost["first_touch"]["ts"]) == ("fallback.example", "", None)
    assert again.content == nobody.content
    assert metric(metrics, "clickstream_stitcher_unattributed_total", reason="session_not_seen") == 1
    assert metric(metrics, "clickstream_stitcher_unattributed_total", reason="no_visitor_data") == 1
