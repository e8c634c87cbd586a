"""beacon.js names its event schema version and numbers each session's events (`seq`), in a real
headless Chromium against a real collector (docs/schema-versioning.md, docs/architecture.md
"Telemetry event"). The collector upcasts: the spool holds `seq` and no `schema` field."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from playwright.sync_api import Page, Route

from collector.schemas import EventSchemas
from tests.e2e.conftest import DemoSite, Recorder, wait_for

pytestmark = pytest.mark.e2e


def seqs_by_session(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for e in events:
        out[e["session_id"]].append(e["seq"])
    return {k: sorted(v) for k, v in out.items()}


def contiguous(events: list[dict[str, Any]]) -> bool:
    return bool(events) and all(s == list(range(len(s))) for s in seqs_by_session(events).values())


def test_every_event_names_the_current_version_and_seq_counts_per_session(site: DemoSite, page: Page,
                                                                         recorder: Recorder) -> None:
    def idle(minutes: int) -> None:  # age the stored session's last activity
        page.evaluate("""m => { const s = JSON.parse(localStorage.getItem('cs_s'));
            s.t -= m * 60000; localStorage.setItem('cs_s', JSON.stringify(s)) }""", minutes)

    page.goto(f"{site.url}/lp/analytics?hero=A")
    page.evaluate("clickstream.track('first_custom', {n: 1}); clickstream.track('second_custom', {n: 2})")
    page.goto(f"{site.url}/features")  # a new page load continues the stored session's counter
    page.evaluate("clickstream.track('third_custom')")
    idle(31)
    page.goto(f"{site.url}/pricing")  # a new session: the counter starts again
    page.evaluate("clickstream.track('fourth_custom')")
    page.evaluate("clickstream.flush()")
    wait_for(lambda: not recorder.pending, 10, "every /collect request to be answered", page=page)
    spooled = site.wait_spooled(lambda evs: contiguous(evs) and {"third_custom", "fourth_custom"}
                                <= {e["type"] for e in evs}, "every session's events, seq 0..n-1", page=page)

    current = EventSchemas().current.short_name
    assert {e["schema"] for e in recorder.sent} == {current}
    assert all("schema" not in e for e in spooled)  # upcast: the spool holds the current shape only
    sessions = seqs_by_session(spooled)
    assert len(sessions) == 2
    first, second = (sorted((e for e in spooled if e["session_id"] == s), key=lambda e: e["seq"])
                     for s in dict.fromkeys(e["session_id"] for e in sorted(spooled, key=lambda e: e["ts"])))
    by_type = [e["type"] for e in first if e["type"] != "engagement"]
    assert by_type == ["exposure", "page_view", "first_custom", "second_custom", "exposure", "page_view",
                       "third_custom"]
    assert [e["type"] for e in second if e["type"] != "engagement"] == ["exposure", "page_view", "fourth_custom"]
    # one order: seq never contradicts ts within a session
    for events in (first, second):
        assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    site.audit(recorder)


def test_a_retried_batch_keeps_its_events_seq(site: DemoSite, page: Page, recorder: Recorder) -> None:
    bodies: list[list[dict[str, Any]]] = []

    def collect(route: Route) -> None:
        bodies.append(json.loads(route.request.post_data or "[]"))
        if len(bodies) == 1:
            route.fulfill(status=503, headers={"Access-Control-Allow-Origin": "*", "Retry-After": "1"},
                          content_type="application/json",
                          body='{"accepted":0,"rejected":0,"errors":[],"error":"spool_full"}')
        else:
            route.continue_()

    page.route(f"{site.collector.url}/collect", collect)
    page.goto(f"{site.url}/lp/analytics?hero=B")
    wait_for(lambda: bodies, 10, "the first batch", page=page)
    refused = {e["event_id"]: e["seq"] for e in bodies[0]}
    spooled = site.wait_spooled(lambda evs: set(refused) <= {e["event_id"] for e in evs},
                                "the refused batch to be retried", page=page)
    assert {e["event_id"]: e["seq"] for e in spooled if e["event_id"] in refused} == refused
    resent = [e for body in bodies[1:] for e in body if e["event_id"] in refused]
    assert resent and all(e["seq"] == refused[e["event_id"]] for e in resent)
    page.evaluate("clickstream.flush()")
    wait_for(lambda: not recorder.pending, 10, "every /collect request to be answered", page=page)
    site.audit(recorder)
