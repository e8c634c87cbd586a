"""beacon.js features in a real headless Chromium, checked in ClickHouse through one real `serve`.

Engagement, automatic events (file downloads, forms, hash routing, web vitals, 404), revenue,
the before-send hook and the other controls, consent-aware (cookieless) mode and first-party
paths. Pages come from a small site served here on names under `.test` (Chromium maps them to
127.0.0.1, so they are neither localhost nor one origin); `serve` runs once for the module with
`CLICKSTREAM_SCRIPT_PATH=/js/app.js` and `CLICKSTREAM_COLLECT_PATH=/api/e`, and the site proxies
`/p/*` to it the way nginx would (README "First-party paths"). Each test uses its own site_id.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from html import escape
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from reports.query import as_dicts, port_client, run_on_client
from tests.conftest import Server, free_port, start_server, wait_for_fold
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, USER_AGENT, Recorder, wait_for

pytestmark = pytest.mark.e2e

SQL_PASSWORD = "e2e-sql"
PROXY_CLIENT_IP = "203.0.113.9"  # what the test proxy puts in X-Forwarded-For

#: Named snippets a page may run before the beacon (?pre=name).
PRE = {
    "hook": """window.clickstreamBeforeSend = e => {
        if (e.type == 'secret_event') return null;
        e.url = e.url.replace(/token=[^&#]*/, 'token=REDACTED');
        e.props = Object.assign({}, e.props, {via: 'hook'});
        return e;
    };""",
    "throwing_hook": "window.clickstreamBeforeSend = e => { if (e.type == 'boom') throw new Error('x'); return e };",
    "consent_stub": "window.clickstream = [['consent', true]];",
}

#: Page bodies (?kind=name).
BODIES = {
    "plain": "<h1>Plain page</h1><p>Some text.</p>",
    "long": "<h1>A long article</h1>" + "".join(f"<p style='height:200px'>Paragraph {i}</p>" for i in range(40)),
    "links": """<h1>Links</h1><a id="pdf" href="/files/report.pdf?v=2">Report (PDF)</a>
<a id="zip" href="/files/data.zip">Data</a> <a id="page" href="/t/other">Other page</a>
<a id="out" href="https://elsewhere.test/x">Elsewhere</a>""",
    "form": """<h1>Newsletter</h1><form id="newsletter" method="post" action="/submit">
<input name="email" type="email" required value="ada@example.org"><button id="go">Subscribe</button></form>
<form name="search" action="/search"><input name="q" value="x"><button id="find">Find</button></form>
<form id="tagged" action="/submit" method="post" data-cs-event="signup"><button id="join">Join</button></form>""",
    "vitals": """<h1>Vitals</h1><p>Largest text block on the page, for LCP.</p>
<button id="b" onclick="const t = performance.now(); while (performance.now() - t < 40); this.textContent='ok'">Click
</button>""",
}


def page_html(request: Request, collector_url: str) -> str:
    q = request.query_params
    src = "/p/js/app.js" if q.get("src") == "proxy" else f"{collector_url}/beacon.js"
    pre = f"<script>{PRE[q['pre']]}</script>" if q.get("pre") else ""
    attrs = q.get("attrs", "")
    kind, site_id = q.get("kind", "plain"), escape(q.get("site", ""))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(kind)}</title>
<link rel="icon" href="data:,">{pre}<script defer src="{escape(src)}" data-site="{site_id}" {attrs}></script>
</head><body>{BODIES[kind]}</body></html>"""


class PageSite:
    """The site the pages come from: /t/<name> pages, /files/*, POST /submit, and /p/* proxied to
    `serve` (X-Forwarded-For added, as nginx's proxy_add_x_forwarded_for does)."""

    def __init__(self, collector: Server) -> None:
        self.collector = collector
        self.port = free_port()
        self.proxied: list[str] = []

        async def page(request: Request) -> Response:
            return HTMLResponse(page_html(request, collector.url))

        async def files(request: Request) -> Response:
            return Response(b"%PDF-1.4\n%%EOF\n", media_type="application/pdf",
                            headers={"Content-Disposition": "attachment"})

        async def submit(request: Request) -> Response:
            return HTMLResponse("<title>thanks</title><h1>Thanks</h1>")

        async def proxy(request: Request) -> Response:
            path = request.url.path.removeprefix("/p")
            self.proxied.append(f"{request.method} {path}")
            headers = {k: v for k, v in request.headers.items() if k in ("content-type", "user-agent")}
            headers["x-forwarded-for"] = PROXY_CLIENT_IP
            async with httpx.AsyncClient(base_url=collector.url) as client:
                answer = await client.request(request.method, path, content=await request.body(), headers=headers)
            return Response(answer.content, status_code=answer.status_code,  # decoded: no content-encoding
                            headers={k: v for k, v in answer.headers.items() if k in ("content-type", "cache-control")})

        app = Starlette(routes=[
            Route("/t/{name}", page), Route("/files/{name}", files), Route("/submit", submit, methods=["POST"]),
            Route("/search", submit), Route("/p/{rest:path}", proxy, methods=["GET", "POST", "HEAD"]),
        ])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 10, "the test site to start")

    def url(self, host: str, name: str = "page", **query: str) -> str:
        """http://<host>.test:<port>/t/<name>?<query> (host "127.0.0.1" for a local page)."""
        base = f"http://{host if host == '127.0.0.1' else host + '.test'}:{self.port}/t/{name}"
        return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("beacon-features")
    server = start_server("serve", root / "data", {
        "CLICKSTREAM_SQL_PASSWORD": SQL_PASSWORD, "CLICKSTREAM_SCRIPT_PATH": "/js/app.js",
        "CLICKSTREAM_COLLECT_PATH": "/api/e", "CLICKSTREAM_SALT_DIR": str(root / "salt"),
        "CLICKSTREAM_FLUSH_INTERVAL_MS": "200", "CLICKSTREAM_SPOOL_SEGMENT_MAX_AGE_MS": "200",
        "CLICKSTREAM_FOLD_INTERVAL_S": "0.5"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site(serve: Server) -> Iterator[PageSite]:
    test_site = PageSite(serve)
    yield test_site
    test_site.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium resolving every *.test name to 127.0.0.1 (sites with their own origin and host)."""
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP *.test 127.0.0.1"])
        yield instance
        instance.close()


def rows(serve: Server, query: str) -> list[dict[str, Any]]:
    """Rows of one read query through serve's query port (as `clickstream sql --format json` shows them)."""
    client = port_client(serve.sql_url, "dashboards", SQL_PASSWORD)
    try:
        return as_dicts(run_on_client(client, query))
    finally:
        client.close()


def events_of(serve: Server, site_id: str, until: Callable[[list[dict[str, Any]]], Any], what: str,
              page: Page | None = None) -> list[dict[str, Any]]:
    """The site's events in ClickHouse (ordered by ts), once `until(events)` holds."""
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        seen[:] = rows(serve, "SELECT type, anonymous_id, session_id, url, path, props, utm_source, channel, "
                              "ip_hash, is_bot, toUnixTimestamp64Milli(ts) AS ts_ms FROM events "
                              f"WHERE site_id = '{site_id}' ORDER BY ts, type")
        return bool(until(seen))

    wait_for(check, 45, what, detail=lambda: [(e["type"], e["url"]) for e in seen], page=page)
    return seen


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def stored_state(page: Page) -> dict[str, Any]:
    """Everything the page's origin keeps: cookies, localStorage, sessionStorage."""
    return {"cookies": page.context.cookies(),
            **page.evaluate("({local: Object.keys(localStorage), session: Object.keys(sessionStorage)})")}


def no_rejections(serve: Server) -> None:
    rejected = serve.data_dir / "rejected"
    files = [p for p in rejected.rglob("*") if p.is_file() and p.stat().st_size] if rejected.exists() else []
    assert not files, [p.read_text()[:2000] for p in files]


def freeze(page: Page) -> None:
    """Stop the page's clock (installed before it loaded): from now on time moves by run_for only."""
    page.clock.pause_at(page.evaluate("Date.now()") / 1000 + 1)  # seconds; a second ahead, in the future


@pytest.fixture
def fresh(new_context: Callable[..., BrowserContext], recorder: Recorder) -> Iterator[Callable[[], Page]]:
    """A new page in a new browser profile, its page errors recorded (none allowed)."""
    pages: list[Page] = []

    def make() -> Page:
        page = recorder.watch(new_context(accept_downloads=True).new_page())
        pages.append(page)
        return page

    yield make
    assert not recorder.page_errors, recorder.page_errors


# -- engagement ----------------------------------------------------------------------------------
def test_scrolling_half_a_long_page_and_staying_3_s_gives_one_engagement(serve: Server, site: PageSite,
                                                                        fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.clock.install()
    page.goto(site.url("read", kind="long", site="engage.test"))
    freeze(page)
    assert page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight / 2 - innerHeight), scrollY") > 0
    page.clock.run_for(3000)
    page.goto(site.url("read", "other", kind="plain", site="engage.test"))  # pagehide: sent by sendBeacon
    events = events_of(serve, "engage.test", lambda evs: of_type(evs, "engagement"), "the engagement event")
    [engagement] = of_type(events, "engagement")
    assert urlsplit(engagement["url"]).path == "/t/page"  # the page it measures, not the next one
    assert 49 <= float(engagement["props"]["scroll_depth"]) <= 51
    assert int(engagement["props"]["engaged_ms"]) >= 3000
    assert engagement["session_id"] == of_type(events, "page_view")[0]["session_id"]
    assert engagement["is_bot"] == 0  # the unload request carries the browser's User-Agent
    wait_for_fold(serve)  # v_sessions reads the roll-ups
    [session] = rows(serve, "SELECT engaged_ms, max_scroll_depth FROM v_sessions WHERE site_id = 'engage.test'")
    assert session["engaged_ms"] >= 3000 and 49 <= session["max_scroll_depth"] <= 51
    no_rejections(serve)


def test_no_engagement_event_without_engagement_and_one_before_an_spa_page_view(
        serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.clock.install()
    page.goto(site.url("spa", kind="long", site="spa-engage.test"))
    freeze(page)
    page.clock.run_for(1500)
    page.evaluate("history.pushState({}, '', '/t/second')")  # SPA: report the first page, then view
    page.clock.run_for(10)  # the beacon sends the view a tick later
    page.evaluate("clickstream.flush()")
    # the second page is left at once, without scrolling: nothing to report for it
    page.goto(site.url("spa", "third", kind="plain", site="spa-engage.test"))
    events = events_of(serve, "spa-engage.test", lambda evs: len(of_type(evs, "page_view")) == 3,
                       "three page views")
    engagements = of_type(events, "engagement")
    assert [urlsplit(e["url"]).path for e in engagements] == ["/t/page"]
    assert int(engagements[0]["props"]["engaged_ms"]) >= 1500
    assert [urlsplit(e["url"]).path for e in of_type(events, "page_view")] == ["/t/page", "/t/second", "/t/third"]
    assert engagements[0]["ts_ms"] <= of_type(events, "page_view")[1]["ts_ms"]


# -- automatic events ----------------------------------------------------------------------------
def test_file_links_give_file_download_with_default_and_configured_extensions(
        serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.goto(site.url("dl", kind="links", site="downloads.test"))
    with page.expect_download():
        page.click("#pdf")
    with page.expect_download():
        page.click("#zip")
    page.evaluate("clickstream.flush()")
    configured = fresh()
    configured.goto(site.url("dl", kind="links", site="downloads.test", attrs="data-downloads=zip"))
    with configured.expect_download():
        configured.click("#pdf")  # not in the configured list
    with configured.expect_download():
        configured.click("#zip")
    configured.evaluate("clickstream.flush()")
    base = f"http://dl.test:{site.port}/files"
    events = events_of(serve, "downloads.test", lambda evs: len(of_type(evs, "file_download")) == 3,
                       "three downloads")
    assert sorted(e["props"]["url"] for e in of_type(events, "file_download")) == [
        f"{base}/data.zip", f"{base}/data.zip", f"{base}/report.pdf"]  # without the query


def test_form_submissions_give_form_submit_unless_tagged(serve: Server, site: PageSite,
                                                         fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.goto(site.url("forms", kind="form", site="forms.test"))
    page.click("#go")  # posts and leaves: sent on pagehide
    page.wait_for_url("**/submit")
    page.goto(site.url("forms", kind="form", site="forms.test"))
    page.click("#join")  # the form is a [data-cs-event]: its own event only
    page.wait_for_url("**/submit")
    page.goto(site.url("forms", kind="form", site="forms.test", attrs='data-forms="false"'))
    page.click("#find")  # form_submit switched off
    page.wait_for_url("**/search?q=x")
    page.goto(site.url("forms", "done", kind="plain", site="forms.test"))
    events = events_of(serve, "forms.test", lambda evs: len(of_type(evs, "page_view")) == 4, "four page views")
    assert [e["props"] for e in of_type(events, "form_submit")] == [{"form": "newsletter", "action": "/submit"}]
    assert len(of_type(events, "signup")) == 1
    assert "ada@example.org" not in json.dumps(events)  # field values are never read


def test_hash_navigation_gives_page_views_with_data_hash(serve: Server, site: PageSite,
                                                         fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.goto(site.url("hash", site="hash.test", attrs="data-hash"))
    page.evaluate("location.hash = '#/settings'")
    page.evaluate("location.hash = '#/settings/profile'")
    page.evaluate("location.hash = '#/settings/profile'")  # no change: no view
    page.wait_for_function("location.hash == '#/settings/profile'")
    page.evaluate("clickstream.flush()")
    events = events_of(serve, "hash.test", lambda evs: len(of_type(evs, "page_view")) >= 3, "three page views")
    views = of_type(events, "page_view")
    assert [urlsplit(v["url"]).fragment for v in views] == ["", "/settings", "/settings/profile"]
    assert len({v["session_id"] for v in views}) == 1


def test_web_vitals_once_per_page_load_when_enabled(serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.goto(site.url("vitals", kind="vitals", site="vitals.test", attrs="data-vitals"))
    page.click("#b")  # an interaction whose handler runs 40 ms, for INP
    page.wait_for_function("document.getElementById('b').textContent == 'ok'")
    page.goto(site.url("vitals", "next", kind="vitals", site="vitals.test"))  # pagehide: the report
    events = events_of(serve, "vitals.test", lambda evs: len(of_type(evs, "page_view")) == 2 and
                       of_type(evs, "web_vitals"), "the web_vitals event")
    [vitals] = of_type(events, "web_vitals")
    metrics = {k: float(v) for k, v in vitals["props"].items()}
    assert set(metrics) == {"lcp", "cls", "inp", "fcp", "ttfb"}
    assert metrics["lcp"] >= metrics["fcp"] >= metrics["ttfb"] >= 0  # first byte, first paint, largest paint
    # INP counts the handler's 40 ms; Event Timing rounds a duration to 8 ms (W3C Event Timing,
    # "duration"), so a click with a quick handler may measure 0 on a fast machine
    assert metrics["cls"] >= 0 and metrics["inp"] >= 40 - 8
    assert urlsplit(vitals["url"]).path == "/t/page"  # the page it measured


def test_data_404_sends_not_found(serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.goto(site.url("errors", "missing", site="errors.test", attrs="data-404"))
    page.evaluate("clickstream.flush()")
    events = events_of(serve, "errors.test", lambda evs: of_type(evs, "not_found"), "the not_found event")
    assert [e["props"] for e in of_type(events, "not_found")] == [{"path": "/t/missing"}]
    assert len(of_type(events, "page_view")) == 1


def test_revenue_is_a_number_with_a_currency(serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.goto(site.url("shop", site="revenue.test"))
    page.evaluate("""clickstream.track('purchase', {revenue: '49.90', currency: 'eur', plan: 'pro'});
        clickstream.track('refund', {revenue: 'a lot', currency: 'USD'}); clickstream.flush()""")
    events = events_of(serve, "revenue.test", lambda evs: of_type(evs, "refund"), "the purchase and refund")
    assert of_type(events, "purchase")[0]["props"] == {"revenue": "49.9", "currency": "EUR", "plan": "pro"}
    assert of_type(events, "refund")[0]["props"] == {"currency": "USD"}  # not a number: left out
    wait_for_fold(serve)
    revenue = rows(serve, "SELECT revenue FROM v_sessions WHERE site_id = 'revenue.test'")
    assert revenue == [{"revenue": {"EUR": 49.9}}]  # Decimal(38, 6) per currency, a JSON number in JSONCompact


# -- control -------------------------------------------------------------------------------------
def test_before_send_changes_and_drops_events(serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.goto(site.url("hooked", site="hook.test", pre="hook", token="abc123", x="1"))
    page.evaluate("clickstream.track('secret_event'); clickstream.track('kept_event', {n: 1}); clickstream.flush()")
    thrower = fresh()
    thrower.goto(site.url("thrown", site="hook.test", pre="throwing_hook"))
    thrower.evaluate("clickstream.track('boom'); clickstream.track('after_boom'); clickstream.flush()")
    events = events_of(serve, "hook.test", lambda evs: of_type(evs, "kept_event") and of_type(evs, "after_boom"),
                       "the kept events")
    assert sorted(types(events)) == ["after_boom", "kept_event", "page_view", "page_view"]
    view = next(e for e in of_type(events, "page_view") if "hooked" in e["url"] or "token" in e["url"])
    assert "token=REDACTED&x=1" in view["url"] and "abc123" not in json.dumps(events)
    assert view["props"] == {"via": "hook"}
    assert of_type(events, "kept_event")[0]["props"] == {"n": "1", "via": "hook"}


def test_exclude_search_and_hash_strip_the_urls_but_keep_the_campaign(
        serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    page = fresh()
    page.goto(site.url("strip", site="strip.test", attrs="data-exclude-search data-exclude-hash",
                       utm_source="newsletter", utm_medium="email", q="private") + "#section")
    page.evaluate("clickstream.flush()")
    events = events_of(serve, "strip.test", lambda evs: of_type(evs, "page_view"), "the page view")
    [view] = of_type(events, "page_view")
    assert view["url"] == f"http://strip.test:{site.port}/t/page"
    assert (view["utm_source"], view["channel"]) == ("newsletter", "email")


def test_domains_localhost_and_opt_out_keep_the_beacon_silent(serve: Server, site: PageSite,
                                                               fresh: Callable[[], Page]) -> None:
    silent = [
        site.url("other-host", site="quiet.test", attrs="data-domains=allowed.test"),  # not in data-domains
        site.url("127.0.0.1", site="quiet.test"),  # localhost without data-local
    ]
    for url in silent:
        page = fresh()
        page.goto(url)
        page.evaluate("clickstream.track('must_not_leave'); clickstream.flush()")
        assert page.evaluate("[clickstream.anonymousId(), clickstream.sessionId()]") == ["", ""]
        assert stored_state(page) == {"cookies": [], "local": [], "session": []}
        page.goto(site.url("other-host", "leave", site="quiet.test", attrs="data-domains=allowed.test"))
    opted_out = fresh()
    opted_out.goto(site.url("allowed", site="quiet.test"))
    opted_out.evaluate("localStorage.setItem('cs_disabled', '1')")
    opted_out.goto(site.url("allowed", "after-opt-out", site="quiet.test"))
    opted_out.evaluate("clickstream.track('must_not_leave'); clickstream.flush()")
    opted_out.evaluate("localStorage.removeItem('cs_disabled')")
    # controls on the same collector, sent last: data-local, a listed domain, opted back in
    for url in (site.url("127.0.0.1", "local-ok", site="quiet.test", attrs="data-local"),
                site.url("allowed", "listed-ok", site="quiet.test", attrs="data-domains=allowed.test,x.test"),
                site.url("allowed", "back-in", site="quiet.test")):
        page = fresh()
        page.goto(url)
        page.evaluate("clickstream.flush()")
    events = events_of(serve, "quiet.test", lambda evs: len(of_type(evs, "page_view")) >= 4, "the control views")
    assert sorted(urlsplit(e["url"]).path for e in of_type(events, "page_view")) == [
        "/t/back-in", "/t/listed-ok", "/t/local-ok", "/t/page"]  # /t/page: the view before opting out
    assert "must_not_leave" not in types(events)


# -- consent-aware mode --------------------------------------------------------------------------
def test_consent_mode_stores_nothing_and_the_collector_derives_a_cookieless_visitor_and_session(
        serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    required = 'data-consent="required"'
    page = fresh()
    page.goto(site.url("shop", "landing", site="consent-a.test", attrs=required, utm_source="newsletter",
                       utm_medium="email"))
    page.evaluate("history.pushState({}, '', '/t/pricing')")
    page.wait_for_function("location.pathname == '/t/pricing'")
    page.goto(site.url("shop", "features", site="consent-a.test", attrs=required))  # a second page load
    page.evaluate("clickstream.track('compare', {rows: 3}); clickstream.flush()")
    assert stored_state(page) == {"cookies": [], "local": [], "session": []}
    assert page.evaluate("[clickstream.anonymousId(), clickstream.sessionId()]") == ["", ""]
    # the same browser (another profile, same network and User-Agent) later that day, and on another site
    again = fresh()
    again.goto(site.url("shop", "again", site="consent-a.test", attrs=required))
    again.evaluate("clickstream.flush()")
    other = fresh()
    other.goto(site.url("blog", "post", site="consent-b.test", attrs=required))
    other.evaluate("clickstream.flush()")
    for each in (page, again, other):
        assert stored_state(each) == {"cookies": [], "local": [], "session": []}

    a = events_of(serve, "consent-a.test", lambda evs: len(of_type(evs, "page_view")) == 4 and
                  of_type(evs, "compare"), "four page views and the custom event")
    b = events_of(serve, "consent-b.test", lambda evs: of_type(evs, "page_view"), "the other site's view")
    visitors = {e["anonymous_id"] for e in a}
    assert len(visitors) == 1 and next(iter(visitors)).startswith("cookieless-")  # stable within the day
    assert {e["anonymous_id"] for e in b} != visitors  # another site, another id
    assert b[0]["anonymous_id"].startswith("cookieless-")
    assert len({e["session_id"] for e in a}) == 1  # sessions: the collector's 30-minute rule
    wait_for_fold(serve)
    session = rows(serve, "SELECT pageviews, is_bounce, channel, utm_source, entry_path FROM v_sessions "
                          "WHERE site_id = 'consent-a.test'")
    assert session == [{"pageviews": 4, "is_bounce": 0, "channel": "email", "utm_source": "newsletter",
                        "entry_path": "/t/landing"}]
    # the visitor id is the keyed hash of (site, IP, User-Agent) with today's salt, which sits in the
    # salt directory, not in the data directory
    salt_file = next((serve.data_dir.parent / "salt").glob("*.salt"))
    want = hashlib.blake2b(f"consent-a.test\x00127.0.0.1\x00{USER_AGENT}".encode(), key=salt_file.read_bytes(),
                           digest_size=12).hexdigest()
    assert visitors == {"cookieless-" + want}
    assert not list(serve.data_dir.rglob("*.salt"))
    no_rejections(serve)


def test_after_consent_the_persistent_ids_take_over_and_withdrawal_deletes_them(
        serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    required = 'data-consent="required"'
    page = fresh()
    page.goto(site.url("shop", "landing", site="consent-c.test", attrs=required))
    page.evaluate("clickstream.track('before_consent'); clickstream.consent(true); clickstream.track('after_consent')")
    anonymous_id = page.evaluate("clickstream.anonymousId()")
    assert anonymous_id and not anonymous_id.startswith("cookieless-")
    assert [c["value"] for c in page.context.cookies() if c["name"] == "cs_id"] == [anonymous_id]
    page.goto(site.url("shop", "next", site="consent-c.test", attrs=required))  # remembered: consented at once
    assert page.evaluate("clickstream.anonymousId()") == anonymous_id
    page.evaluate("clickstream.consent(false); clickstream.track('after_withdrawal'); clickstream.flush()")
    assert stored_state(page) == {"cookies": [], "local": [], "session": []}
    stubbed = fresh()  # a consent manager that calls consent(true) before the beacon loads
    stubbed.goto(site.url("shop", "stubbed", site="consent-c.test", attrs=required, pre="consent_stub"))
    stubbed.evaluate("clickstream.flush()")

    events = events_of(serve, "consent-c.test", lambda evs: of_type(evs, "after_withdrawal") and
                       len(of_type(evs, "page_view")) == 3, "the events around consent")
    by_type = {e["type"]: e for e in events if e["type"] != "page_view"}
    assert by_type["before_consent"]["anonymous_id"].startswith("cookieless-")
    assert by_type["after_consent"]["anonymous_id"] == anonymous_id
    assert by_type["after_withdrawal"]["anonymous_id"].startswith("cookieless-")
    views = of_type(events, "page_view")
    assert [v["anonymous_id"].startswith("cookieless-") for v in views] == [True, False, False]
    assert views[1]["anonymous_id"] == anonymous_id
    assert views[2]["anonymous_id"] not in (anonymous_id, views[0]["anonymous_id"])  # the stub's new visitor


# -- first-party paths ---------------------------------------------------------------------------
def test_first_party_paths_serve_the_script_and_take_events_through_a_proxy(
        serve: Server, site: PageSite, fresh: Callable[[], Page]) -> None:
    page = fresh()
    posted: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posted.append(urlsplit(r.url).path))
    page.goto(site.url("shop", "proxied", site="proxied.test", src="proxy"))
    page.evaluate("clickstream.track('through_proxy'); clickstream.flush()")
    events = events_of(serve, "proxied.test", lambda evs: of_type(evs, "through_proxy"), "the proxied events",
                       page=page)
    assert set(posted) == {"/p/api/e"}  # the collect path, learned from the script's own src
    assert {"GET /js/app.js", "POST /api/e"} <= set(site.proxied)
    # the collector saw the browser's address through X-Forwarded-For (trusted proxy 127.0.0.1)
    salt_file = next((serve.data_dir.parent / "salt").glob("*.salt"))
    assert {e["ip_hash"] for e in events} == {
        hashlib.blake2b(PROXY_CLIENT_IP.encode(), key=salt_file.read_bytes(), digest_size=8).hexdigest()}
    with serve.client() as http:
        custom = http.get("/js/app.js", headers={"Accept-Encoding": "gzip"})
        default = http.get("/beacon.js")
    assert custom.status_code == default.status_code == 200
    assert b'URL("../api/e",' in custom.content and b'URL("collect",' in default.content
    assert int(custom.headers["content-length"]) <= 4 * 1024
    no_rejections(serve)
