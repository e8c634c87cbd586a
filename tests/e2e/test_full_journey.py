"""The whole path in a real browser: beacon -> collector -> spool ->
flusher -> ClickHouse, and the demo's conversion hook -> stitcher -> `lead_created`.

Scenario: land from a paid campaign, exposed to hero variant B -> SPA navigation -> the tracked
button -> the signup form -> SIGTERM (serve flushes everything) -> assert in ClickHouse with
`clickstream sql`: the events, one session (entry path, page views, UTM), one `lead_created`
with the frozen UTM and variant. Then a second visit with another campaign and variant A, and a
repeated signup: the lead is unchanged, and variant A gets no converter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page

from tests.conftest import ROOT, Server
from tests.e2e.conftest import DemoSite, Recorder, wait_for

pytestmark = pytest.mark.e2e

STITCH_TOKEN = "e2e-stitch-token"
SQL_PASSWORD = "e2e-sql-password"
SPRING = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring_sale"}
RETARGET = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": "retarget"}
EMAIL = "grace@example.org"


def sql(server: Server, query: str) -> list[dict[str, Any]]:
    """Rows of one read-only query, through `clickstream sql --format json` on the server's data
    directory (the server is stopped: the CLI opens the embedded ClickHouse itself)."""
    done = subprocess.run([sys.executable, "-m", "clickstream.cli", "sql", "--format", "json", query],
                          env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def query_string(utm: dict[str, str], hero: str) -> str:
    return "&".join(f"{k}={v}" for k, v in utm.items()) + f"&hero={hero}"


def sign_up(page: Page) -> Page:
    page.fill("input[name=email]", EMAIL)
    page.click("button[type=submit]")
    page.wait_for_selector("#lead-event, #error")
    return page


def settle(page: Page, recorder: Recorder) -> None:
    page.evaluate("window.clickstream && clickstream.flush()")  # error pages carry no beacon
    wait_for(lambda: not recorder.pending, 15, "every /collect request to be answered", page=page)


def test_visit_expose_navigate_click_sign_up_then_revisit_leaves_the_lead_frozen(
        server_factory: Callable[..., Server], demo_factory: Callable[..., DemoSite],
        new_context: Callable[..., BrowserContext], recorder: Recorder) -> None:
    serve = server_factory("serve", stitch_token=STITCH_TOKEN, sql_password=SQL_PASSWORD)
    site = demo_factory(serve, stitch_token=STITCH_TOKEN)
    page = recorder.watch(new_context().new_page())

    # First visit: paid campaign, hero B, SPA navigation, tracked button, signup.
    page.goto(f"{site.url}/lp/analytics?{query_string(SPRING, 'B')}")
    page.click("header a[href='/pricing']")
    page.click("#cta")
    sign_up(page)
    assert page.title() == "Thanks for signing up", page.text_content("body")
    lead = json.loads(page.text_content("#lead-event") or "{}")
    lead_id = page.text_content("#lead-id")
    anonymous_id = next(c["value"] for c in page.context.cookies() if c["name"] == "cs_id")
    assert (lead["lead_id"], lead["anonymous_id"]) == (lead_id, anonymous_id)
    for touch in ("first_touch", "last_touch"):
        assert {k: lead[touch][k] for k in SPRING} == SPRING, lead
    assert lead["landing_path"] == "/lp/analytics"
    assert lead["variants"] == {"hero": "B"}
    session_id = page.evaluate("clickstream.sessionId()")
    assert lead["session_id"] == session_id  # the form's hidden field, from the beacon
    settle(page, recorder)  # the thank-you page's own page view included

    assert serve.stop() == 0  # SIGTERM: stop accepting, flush the spool, exit
    who = f"anonymous_id = '{anonymous_id}'"  # a UUID the beacon made: safe to inline
    events = sql(serve, f"SELECT type, path, session_id, props, variants, utm_campaign FROM events WHERE {who}")
    events = [e for e in events if e["type"] != "engagement"]  # present or not with the time spent on a page
    assert sorted((e["type"], e["path"]) for e in events) == sorted([
        ("exposure", "/lp/analytics"), ("page_view", "/lp/analytics"), ("page_view", "/pricing"),
        ("cta_click", "/pricing"), ("signup_submit", "/pricing"), ("page_view", "/signup")])
    assert {e["session_id"] for e in events} == {session_id}
    assert all(e["variants"] == {"hero": "B"} and e["utm_campaign"] == "spring_sale" for e in events), events
    assert next(e["props"] for e in events if e["type"] == "cta_click") == {"plan": "team", "placement": "pricing"}
    sessions = sql(serve, "SELECT session_id, entry_path, pageviews, utm_source, utm_medium, utm_campaign "
                          f"FROM v_sessions WHERE {who}")
    assert sessions == [{"session_id": session_id, "entry_path": "/lp/analytics", "pageviews": 3, **SPRING}]
    leads = sql(serve, f"SELECT lead_id, anonymous_id, payload FROM lead_events WHERE lead_id = '{lead_id}'")
    assert len(leads) == 1 and leads[0]["anonymous_id"] == anonymous_id
    assert json.loads(leads[0]["payload"]) == lead

    # Second visit, another campaign and variant A; the same person signs up again.
    serve = server_factory("serve", data_dir=serve.data_dir, stitch_token=STITCH_TOKEN, sql_password=SQL_PASSWORD)
    site = demo_factory(serve, stitch_token=STITCH_TOKEN)
    page.goto(f"{site.url}/lp/privacy?{query_string(RETARGET, 'A')}")
    page.click("header a[href='/features']")
    sign_up(page)
    if page.title() == "Thanks for signing up":  # 200: the original event, byte for byte
        assert json.loads(page.text_content("#lead-event") or "{}") == lead
    else:  # 409: the repeat differs (another session), the lead stays as it was
        assert page.title() == "Already signed up", page.text_content("body")
    settle(page, recorder)
    assert serve.stop() == 0

    leads = sql(serve, f"SELECT payload FROM lead_events WHERE lead_id = '{lead_id}'")
    assert [json.loads(row["payload"]) for row in leads] == [lead]
    sessions = sql(serve, "SELECT entry_path, pageviews, utm_campaign FROM v_sessions "
                          f"WHERE {who} ORDER BY started_at")
    assert sessions == [{"entry_path": "/lp/analytics", "pageviews": 3, "utm_campaign": "spring_sale"},
                        {"entry_path": "/lp/privacy", "pageviews": 2, "utm_campaign": "retarget"}]
    second = sql(serve, f"SELECT DISTINCT variants FROM events WHERE {who} AND utm_campaign = 'retarget'")
    assert second == [{"variants": {"hero": "A"}}]  # the beacon carried the new assignment
    lift = sql(serve, "SELECT variant_id, visitors, converters FROM v_variant_lift "
                      f"WHERE site_id = '{site.config.site_id}' AND experiment_id = 'hero' ORDER BY variant_id")
    # The visitor counts in the variant of their first exposure (B), converted there; the later
    # A exposure moves neither them nor the lead.
    assert lift == [{"variant_id": "B", "visitors": 1, "converters": 1}]
