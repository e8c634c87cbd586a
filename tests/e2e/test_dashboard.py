"""The dashboard in a real browser (`GET /dashboard` on the query port of a real `clickstream serve`).

The load model's traffic goes through /collect and /stitch; then headless Chromium logs in with the
form and every total, top row, funnel step and variant row the page shows is checked against the
model's ground truth (load.model.Truth and plain Python over the generated events), unfiltered and
filtered by a channel; the experiments panel against `clickstream experiments --format json`.
Screenshots at 1280x800 and 390x844 go to tests/e2e/artifacts/ (git ignores it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from load.audit import wait_for_flush
from load.driver import Ledger, drive
from load.model import ModelConfig, Traffic, Truth, generate
from reports.query import port_rows_query
from tests.conftest import ROOT, Server, start_server
from tests.e2e.conftest import USER_AGENT
from tests.funnel_reference import funnel as funnel_truth
from tests.funnel_reference import path_of

pytestmark = pytest.mark.e2e

PASSWORD = "dash-sql-secret"
STITCH = "dash-stitch-secret"
USER = "dashboards"
ARTIFACTS = ROOT / "tests" / "e2e" / "artifacts"
FUNNEL = ["/", "/pricing", "cta_click"]
FUNNEL_WINDOW_S = 1800


@dataclass
class Loaded:
    server: Server
    traffic: Traffic
    truth: Truth
    ledger: Ledger

    @property
    def dashboard(self) -> str:
        return self.server.sql_url + "/dashboard"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    server = start_server("serve", tmp_path_factory.mktemp("dash") / "data", {
        "CLICKSTREAM_SQL_PASSWORD": PASSWORD, "CLICKSTREAM_STITCH_TOKEN": STITCH,
    }, ready_path="/readyz")
    try:
        traffic = generate(ModelConfig(seed=21, visitors=300, site_id="dash.example"))
        ledger = asyncio.run(drive(server.url, traffic, seed=21, concurrency=16, stitch_token=STITCH))
        assert not ledger.unexpected, ledger.unexpected[:5]
        assert len(ledger.stitched) == len(traffic.leads) > 0
        query, client = port_rows_query(server.sql_url, USER, PASSWORD)
        try:
            wait_for_flush(query, traffic.config.site_id, len(ledger.accepted), len(ledger.stitched), timeout_s=120)
        finally:
            client.close()
        yield Loaded(server, traffic, Truth(traffic), ledger)
    finally:
        server.stop()


# -- ground truth --------------------------------------------------------------------------------


def human_sessions(truth: Truth, channel: str | None = None) -> list[dict[str, Any]]:
    return [s for s in truth.human_sessions() if channel is None or s["channel"] == channel]


def leads(loaded: Loaded, channel: str | None = None) -> list[dict[str, Any]]:
    """Stitched leads with their frozen attribution (the model's), filtered by last-touch channel."""
    out = []
    for lead in loaded.traffic.leads:
        attribution = loaded.truth.lead_attribution(lead)
        if channel is None or attribution["last_touch"]["channel"] == channel:
            out.append({"lead": lead, **attribution})
    return out


def totals_truth(loaded: Loaded, channel: str | None = None) -> dict[str, Any]:
    sessions = human_sessions(loaded.truth, channel)
    n = len(sessions)
    n_leads = len(leads(loaded, channel))
    return {
        "visitors": len({s["anonymous_id"] for s in sessions}), "sessions": n,
        "pageviews": sum(s["pageviews"] for s in sessions),
        "bounce_rate": sum(s["is_bounce"] for s in sessions) / n,
        "avg_duration_s": sum(s["duration_s"] for s in sessions) / n,
        "leads": n_leads, "conversion_rate": n_leads / n,
    }


def events_of(loaded: Loaded, channel: str | None = None) -> list[dict[str, Any]]:
    """Human events of the (filtered) sessions."""
    keep = {s["session_id"] for s in human_sessions(loaded.truth, channel)}
    return [e for e, _ in loaded.traffic.events if e["session_id"] in keep]


def by_key(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {row[key]: row for row in rows}


# -- the page ------------------------------------------------------------------------------------


def login(page: Page, url: str, password: str = PASSWORD) -> None:
    page.goto(url)
    page.fill("#user", USER)
    page.fill("#password", password)
    page.click("button[type=submit]")


def ready(page: Page) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    errors = page.eval_on_selector_all("[data-error]", "nodes => nodes.map(n => n.id + ': ' + n.dataset.error)")
    assert not errors, errors


def read_table(page: Page, testid: str) -> list[dict[str, str]]:
    """Rows of a panel's table as {column: data-value} (the raw number behind the formatted text)."""
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        f"[data-testid='{testid}'] tbody tr",
        "rows => rows.filter(r => r.querySelector('[data-col]')).map(r => Object.fromEntries("
        "[...r.querySelectorAll('[data-col]')].map(c => [c.dataset.col, c.dataset.value])))")
    return rows


def read_totals(page: Page) -> dict[str, str]:
    totals: dict[str, str] = page.eval_on_selector_all(
        "[data-total]", "cards => Object.fromEntries(cards.map(c => [c.dataset.total, "
        "c.querySelector('.value').dataset.value]))")
    return totals


def assert_totals(page: Page, want: dict[str, Any]) -> None:
    got = read_totals(page)
    for key in ("visitors", "sessions", "pageviews", "leads"):
        assert int(got[key]) == want[key], (key, got, want)
    for key in ("bounce_rate", "avg_duration_s", "conversion_rate"):
        assert float(got[key]) == pytest.approx(want[key], rel=1e-9, abs=1e-9), (key, got, want)


def assert_panels(page: Page, loaded: Loaded, channel: str | None) -> None:
    """Totals, sources, landing/top pages, custom events, leads and the funnel equal the truth."""
    assert_totals(page, totals_truth(loaded, channel))
    sessions = human_sessions(loaded.truth, channel)
    lead_rows = leads(loaded, channel)

    # Sources by channel: sessions, visitors, leads (last touch).
    want_channels: dict[str, dict[str, Any]] = defaultdict(lambda: {"sessions": 0, "visitors": set(), "leads": 0})
    for s in sessions:
        want_channels[s["channel"]]["sessions"] += 1
        want_channels[s["channel"]]["visitors"].add(s["anonymous_id"])
    for lead in lead_rows:
        want_channels[lead["last_touch"]["channel"]]["leads"] += 1
    got = by_key(read_table(page, "sources-table"), "key")
    assert set(got) == set(want_channels)
    for name, want in want_channels.items():
        assert (int(got[name]["sessions"]), int(got[name]["visitors"]), int(got[name]["leads"])) == (
            want["sessions"], len(want["visitors"]), want["leads"]), name

    # Pages: top pages (page views per path), then landing pages (sessions, visitors, leads).
    events = events_of(loaded, channel)
    views = Counter(path_of(e["url"]) for e in events if e["type"] == "page_view")
    got = by_key(read_table(page, "pages-table"), "path")
    assert {p: int(r["pageviews"]) for p, r in got.items()} == dict(views)
    page.click("#page-tabs button[data-pages=landing]")
    ready(page)
    want_landing: dict[str, dict[str, Any]] = defaultdict(lambda: {"sessions": 0, "visitors": set(), "leads": 0})
    for s in sessions:
        want_landing[s["entry_path"]]["sessions"] += 1
        want_landing[s["entry_path"]]["visitors"].add(s["anonymous_id"])
    for lead in lead_rows:
        want_landing[lead["landing_path"]]["leads"] += 1
    got = by_key(read_table(page, "pages-table"), "path")
    assert {p: (int(r["sessions"]), int(r["visitors"]), int(r["leads"])) for p, r in got.items()} == {
        p: (w["sessions"], len(w["visitors"]), w["leads"]) for p, w in want_landing.items()}
    page.click("#page-tabs button[data-pages=top]")
    ready(page)

    # Custom events: count and unique visitors per type (page views excluded).
    want_types: dict[str, tuple[int, set[str]]] = {}
    for e in events:
        if e["type"] != "page_view":
            count, visitors = want_types.get(e["type"], (0, set()))
            visitors.add(e["anonymous_id"])
            want_types[e["type"]] = (count + 1, visitors)
    got = by_key(read_table(page, "events-table"), "type")
    assert {t: (int(r["events"]), int(r["visitors"])) for t, r in got.items()} == {
        t: (c, len(v)) for t, (c, v) in want_types.items()}

    # Leads: the latest 20 (by occurred_at, then lead_id) with their frozen attribution.
    got_leads = read_table(page, "leads-table")
    want_latest = sorted(lead_rows, key=lambda r: (r["lead"].occurred_at_ms, r["lead"].lead_id), reverse=True)[:20]
    assert [r["lead_id"] for r in got_leads] == [r["lead"].lead_id for r in want_latest]
    for got_lead, want_lead in zip(got_leads, want_latest, strict=True):
        assert got_lead["landing_path"] == want_lead["landing_path"]
        assert got_lead["first_channel"] == want_lead["first_touch"]["channel"]
        assert got_lead["channel"] == want_lead["last_touch"]["channel"]

    # The funnel defined in the page (kept in the URL).
    got_funnel = read_table(page, "funnel-table")
    assert [int(r["reached"]) for r in got_funnel] == funnel_truth(events, FUNNEL, FUNNEL_WINDOW_S, "visitor")
    assert [r["name"] for r in got_funnel] == FUNNEL


def experiments_cli(loaded: Loaded) -> list[dict[str, Any]]:
    env = {**os.environ, "CLICKSTREAM_DATA_DIR": str(loaded.server.data_dir), "CLICKSTREAM_SQL_PASSWORD": PASSWORD,
           "CLICKSTREAM_SQL_PORT": loaded.server.env["CLICKSTREAM_SQL_PORT"]}
    done = subprocess.run([sys.executable, "-m", "clickstream.cli", "experiments", "--format", "json",
                           "--site", loaded.truth.site], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report: list[dict[str, Any]] = json.loads(done.stdout)["experiments"]
    return report


def assert_experiments(page: Page, loaded: Loaded) -> None:
    """Variant rows equal the model's visitors and converters, and every number equals the CLI's."""
    cli = experiments_cli(loaded)
    counts = loaded.truth.variant_counts()
    assert {e["experiment_id"] for e in cli} == {exp for exp, _ in counts}
    for exp in cli:
        rows = by_key(read_table(page, f"experiment-{exp['experiment_id']}"), "variant_id")
        assert set(rows) == {v["variant_id"] for v in exp["variants"]}
        for variant in exp["variants"]:
            row = rows[variant["variant_id"]]
            want = counts[(exp["experiment_id"], variant["variant_id"])]
            assert (int(row["visitors"]), int(row["converters"])) == (want["visitors"], want["converters"])
            for key in ("visitors", "converters", "conversion_rate", "lift", "lift_ci95_low", "p_value",
                        "chance_to_beat_control"):
                shown = row[key]
                if variant[key] is None:
                    assert shown == "", (key, row)
                else:
                    assert float(shown) == pytest.approx(variant[key], rel=1e-12, abs=1e-15), (key, row, variant)
        srm = page.get_attribute(f"[data-experiment='{exp['experiment_id']}'] [data-srm]", "data-srm")
        assert srm == ("mismatch" if exp["srm"]["mismatch"] else "ok")


def test_dashboard_shows_the_ground_truth_and_filters_every_panel(
        loaded: Loaded, browser: Browser) -> None:
    context = browser.new_context(user_agent=USER_AGENT, viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        login(page, loaded.dashboard + "/login")
        ready(page)
        funnel_url = (f"{loaded.dashboard}?site={loaded.truth.site}&range=7d")
        page.goto(funnel_url)
        ready(page)
        # Define the funnel in the page: it lands in the URL.
        page.fill("#funnel-steps", ", ".join(FUNNEL))
        page.fill("#funnel-window", str(FUNNEL_WINDOW_S))
        page.click("#funnel-form button[type=submit]")
        ready(page)
        assert "funnel=" in page.url and f"window={FUNNEL_WINDOW_S}" in page.url
        assert_panels(page, loaded, None)
        assert_experiments(page, loaded)
        text = page.text_content("[data-total=visitors] .value") or ""
        assert text == f"{totals_truth(loaded)['visitors']:,}"  # formatted for people
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-1280x800.png"), full_page=True)

        # Per session: the same funnel counted in sessions.
        page.select_option("#funnel-per", "session")
        page.click("#funnel-form button[type=submit]")
        ready(page)
        got = [int(r["reached"]) for r in read_table(page, "funnel-table")]
        assert got == funnel_truth(events_of(loaded), FUNNEL, FUNNEL_WINDOW_S, "session")
        page.select_option("#funnel-per", "visitor")
        page.click("#funnel-form button[type=submit]")
        ready(page)

        # Click a channel: every panel follows, and the filter is in the URL.
        page.click("[data-testid='sources-table'] button[data-filter=channel][data-filter-value=paid_search]")
        ready(page)
        assert "channel=paid_search" in page.url
        assert_panels(page, loaded, "paid_search")
        # A shared URL gives the same page in a new tab.
        shared = context.new_page()
        shared.goto(page.url)
        ready(shared)
        assert read_totals(shared) == read_totals(page)
        shared.close()

        # Click a campaign on the utm_campaign tab: both filters apply, chip per filter.
        page.click("#source-tabs button[data-tab=utm_campaign]")
        ready(page)
        campaign_rows = by_key(read_table(page, "sources-table"), "key")
        assert set(campaign_rows) == {"spring_sale"}
        page.click("[data-testid=filters] button[data-clear=channel]")
        ready(page)
        assert "channel=" not in page.url
        assert_totals(page, totals_truth(loaded))

        # Click variant B of the hero experiment: sessions that carried it, leads frozen with it.
        page.click("[data-testid=experiment-hero] button[data-filter=variant][data-filter-value=B]")
        ready(page)
        assert "experiment=hero" in page.url and "variant=B" in page.url
        carried = {e["session_id"] for e, _ in loaded.traffic.events if (e.get("variants") or {}).get("hero") == "B"}
        sessions = [s for s in human_sessions(loaded.truth) if s["session_id"] in carried]
        got = read_totals(page)
        assert int(got["sessions"]) == len(sessions)
        assert int(got["visitors"]) == len({s["anonymous_id"] for s in sessions})
        assert int(got["leads"]) == sum(lead["variants"].get("hero") == "B" for lead in leads(loaded))
        assert not page_errors, page_errors
    finally:
        context.close()


def test_dashboard_on_a_phone_is_readable_and_keyboard_usable(loaded: Loaded, browser: Browser) -> None:
    # HTTP Basic in a browser: `?auth=basic` answers 401 with a Basic challenge, which the browser
    # answers with its credentials (Playwright's http_credentials), and the page sets its cookie.
    context = browser.new_context(user_agent=USER_AGENT, viewport={"width": 390, "height": 844},
                                  http_credentials={"username": USER, "password": PASSWORD})
    try:
        page = context.new_page()
        page.goto(f"{loaded.dashboard}?auth=basic&site={loaded.truth.site}&funnel={','.join(FUNNEL)}&window={FUNNEL_WINDOW_S}")
        ready(page)
        assert_totals(page, totals_truth(loaded))
        # No horizontal scrolling of the page itself (tables scroll in their own boxes).
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # Text stays readable: no text smaller than 12 px.
        smallest = page.evaluate("Math.min(...[...document.querySelectorAll('td, th, dt, dd, p, button, label')]"
                                 ".filter(n => n.offsetParent).map(n => parseFloat(getComputedStyle(n).fontSize)))")
        assert smallest >= 12
        # The chart has a text alternative, and the same numbers as a table.
        assert "visitors, sessions and page views" in (page.text_content("#traffic-summary") or "")
        # Keyboard: tab to a channel's filter button and press Enter.
        page.focus("[data-testid='sources-table'] button[data-filter=channel][data-filter-value=email]")
        page.keyboard.press("Enter")
        ready(page)
        assert "channel=email" in page.url
        assert_totals(page, totals_truth(loaded, "email"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-390x844.png"), full_page=True)
    finally:
        context.close()


def test_dashboard_without_or_with_wrong_credentials_gets_nothing(loaded: Loaded, browser: Browser) -> None:
    context = browser.new_context(user_agent=USER_AGENT)
    try:
        page = context.new_page()
        response = page.goto(loaded.dashboard)
        assert response is not None and response.status == 401
        assert page.locator("#password").count() == 1  # the login form, no data
        assert loaded.truth.site not in page.content()
        login(page, loaded.dashboard + "/login", password="wrong")
        assert page.text_content("#login-error") == "Wrong user name or password."
        assert not [c for c in context.cookies() if c["name"] == "clickstream_dashboard"]
        for path in ("/dashboard/api/queries", "/dashboard/api/experiments", "/dashboard/static/dashboard.js"):
            answer = context.request.get(loaded.server.sql_url + path)
            assert answer.status == 401, path
        answer = context.request.post(loaded.server.sql_url + "/", data="SELECT count() FROM v_sessions")
        assert answer.status == 403 and "Authentication failed" in answer.text()
        # After a login and a logout, the old cookie opens nothing either.
        login(page, loaded.dashboard + "/login")
        ready(page)
        cookie = next(c for c in context.cookies() if c["name"] == "clickstream_dashboard")
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        page.click(".logout button")
        page.wait_for_selector("#password")
        stale = browser.new_context()
        try:
            stale.add_cookies([cookie])
            assert stale.request.get(loaded.server.sql_url + "/dashboard/api/queries").status == 401
        finally:
            stale.close()
    finally:
        context.close()


def test_empty_dashboard_shows_the_script_tag(tmp_path: Path, browser: Browser,
                                              server_factory: Callable[..., Server]) -> None:
    server = server_factory("serve", sql_password=PASSWORD)
    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    try:
        page = context.new_page()
        page.goto(server.sql_url + "/dashboard?auth=basic&site=new.example")
        ready(page)
        assert page.is_visible("[data-testid=empty]")
        tag = page.text_content("[data-testid=script-tag]") or ""
        assert tag == f'<script defer src="{server.url}/beacon.js" data-site="new.example"></script>'
        assert "No events yet" in (page.text_content("#empty-text") or "")
    finally:
        context.close()


def test_live_panel_refreshes_without_reloading(loaded: Loaded, browser: Browser) -> None:
    """Runs last in this module: it adds a visit to the model's site, after the tests above read it."""
    import httpx

    from tests.conftest import make_event

    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    try:
        page = context.new_page()
        page.goto(f"{loaded.dashboard}?auth=basic&site={loaded.truth.site}")
        ready(page)
        # The model's traffic ended more than 5 minutes ago.
        assert page.get_attribute("[data-testid=live-visitors]", "data-value") == "0"
        event = make_event(site_id=loaded.truth.site, anonymous_id="live-visitor", session_id="live-session",
                           url=f"https://{loaded.truth.site}/live-now")
        answer = httpx.post(loaded.server.url + "/collect", json=event, headers={"User-Agent": USER_AGENT}, timeout=30)
        assert answer.status_code == 202, answer.text
        # Within a flush and a 10 s refresh, with no navigation: one visitor, on /live-now.
        page.wait_for_selector("[data-testid=live-visitors][data-value='1']", timeout=60_000)
        assert [r["path"] for r in read_table(page, "live-table")] == ["/live-now"]
    finally:
        context.close()
