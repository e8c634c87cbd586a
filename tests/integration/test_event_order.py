"""Order of events (sql/README.md "Order of events"): events of a session with equal `ts` are ordered by
the client's `seq`, else by arrival (spool position), in v_sessions (entry and exit page, first touch
and channel), the roll-ups and the stitcher's attribution. Real `serve` (one collector process, so one
spool: arrival order is exact), real HTTP, real chDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clickstream.core.clickhouse import connect
from load.model import HUMAN_AGENTS
from tests.conftest import Server, now_ms, sql_rows, start_server, wait_for

SITE = "order.example"
PASSWORD = "order-secret"
STITCH_TOKEN = "order-stitch"
BROWSER = HUMAN_AGENTS[0]  # not a bot: bots are left out of the roll-ups and of attribution
TS = now_ms() - 3_600_000  # every event of a session at this same millisecond

#: (path, UTM query) of the three events of each scenario, in the order they are sent
FIRST = ("/from-ad", "?utm_source=google&utm_medium=cpc&utm_campaign=tie")
MIDDLE = ("/middle", "")
LAST = ("/last", "")


def event(session: str, path_query: tuple[str, str], **extra: Any) -> dict[str, Any]:
    path, query = path_query
    return {"type": "page_view", "site_id": SITE, "anonymous_id": f"anon-{session}", "session_id": session,
            "ts": TS, "url": f"https://{SITE}{path}{query}", "event_id": str(uuid.uuid4()), **extra}


def post(server: Server, events: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{server.url}/collect", json=events, headers={"User-Agent": BROWSER}, timeout=30)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)


def flushed(server: Server, session: str, n: int) -> None:
    """Wait until `n` events of `session` are in ClickHouse (the next POST lands in another insert)."""
    wait_for(lambda: sql_rows(server, f"SELECT count() FROM events WHERE session_id = '{session}'") == [[n]],
             what=f"{n} events of {session} flushed")


@pytest.fixture(scope="module")
def ordered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    data_dir = tmp_path_factory.mktemp("order") / "data"
    server = start_server("serve", data_dir, {"CLICKSTREAM_WORKERS": "0", "CLICKSTREAM_SQL_PASSWORD": PASSWORD,
                                              "CLICKSTREAM_STITCH_TOKEN": STITCH_TOKEN,
                                              "CLICKSTREAM_FOLD_INTERVAL_S": "0.5"}, ready_path="/readyz")
    leads: dict[str, Any] = {}
    try:
        # one batch: arrival order is the order in the body
        post(server, [event("one-batch", FIRST), event("one-batch", MIDDLE), event("one-batch", LAST)])
        # several batches, each flushed before the next is sent: arrival order across inserts and segments
        for n, part in enumerate((FIRST, MIDDLE, LAST), start=1):
            post(server, [event("batches", part)])
            flushed(server, "batches", n)
        # a retry: the browser sends the first event again after the others (same event_id); the
        # retry is dropped and the first arrival keeps its place
        first = event("retry", FIRST)
        post(server, [first])
        flushed(server, "retry", 1)
        post(server, [event("retry", MIDDLE), event("retry", LAST)])
        post(server, [first])
        # seq wins over arrival: the last event (seq 2) and the middle one (seq 1) arrive first
        post(server, [event("seq", LAST, seq=2), event("seq", MIDDLE, seq=1)])
        flushed(server, "seq", 2)
        post(server, [event("seq", FIRST, seq=0)])
        flushed(server, "seq", 3)
        # the stitcher's attribution reads the same order: its landing page and first touch
        for session in ("one-batch", "seq"):
            response = httpx.post(f"{server.url}/stitch", headers={"Authorization": f"Bearer {STITCH_TOKEN}"},
                                  json={"lead_id": f"lead-{session}", "anonymous_id": f"anon-{session}",
                                        "session_id": session, "site_id": SITE}, timeout=60)
            assert response.status_code == 201, response.text
            leads[session] = response.json()
    finally:
        assert server.stop() == 0
    yield data_dir, leads


@pytest.mark.parametrize("session", ["one-batch", "batches", "retry", "seq"])
def test_equal_timestamps_follow_seq_then_arrival(ordered: tuple[Path, dict[str, Any]], session: str) -> None:
    data_dir, _ = ordered
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    try:
        (row,) = client.query(
            "SELECT entry_path, exit_path, channel, utm_source, utm_campaign, pageviews, events, "
            "toUnixTimestamp64Milli(started_at), toUnixTimestamp64Milli(ended_at) FROM v_sessions "
            "WHERE site_id = {s:String} AND session_id = {id:String}", parameters={"s": SITE, "id": session}
        ).result_rows
        stored = client.query("SELECT count(), uniqExact(event_id), max(seq) FROM events "
                              "WHERE session_id = {id:String}", parameters={"id": session}).result_rows
        landing = client.query("SELECT landing_path, sessions FROM v_landing_pages WHERE site_id = {s:String} "
                               "ORDER BY landing_path", parameters={"s": SITE}).result_rows
    finally:
        client.close()
    assert row == ("/from-ad", "/last", "paid_search", "google", "tie", 3, 3, TS, TS)
    assert stored == [(3, 3, 2 if session == "seq" else 0)]  # the retry stored once; seq kept
    assert landing == [("/from-ad", 4)]  # every session's landing page is its first event's


@pytest.mark.parametrize("session", ["one-batch", "seq"])
def test_stitcher_attribution_uses_the_same_order(ordered: tuple[Path, dict[str, Any]], session: str) -> None:
    lead = ordered[1][session]
    assert lead["landing_path"] == "/from-ad"
    assert (lead["first_touch"]["channel"], lead["first_touch"]["utm_campaign"]) == ("paid_search", "tie")
