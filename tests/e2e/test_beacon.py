"""beacon.js in a real headless Chromium against a real collector.

Pages come from the demo site; the beacon is the file the collector serves at `GET /beacon.js`.
The observable outcome is the collector's spool (before the flusher exists); every test ends
with `site.audit`: each sent event schema-valid, none rejected, no event_id twice, no page error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, Route

from tests.e2e.conftest import DemoSite, Recorder, wait_for

pytestmark = pytest.mark.e2e

UTM_QUERY = ("utm_source=newsletter&utm_medium=email&utm_campaign=launch_week&utm_term=analytics"
             "&utm_content=hero_link")
UTM = {"source": "newsletter", "medium": "email", "campaign": "launch_week", "term": "analytics",
       "content": "hero_link"}
REFERRER = "https://news.example.org/article/42"
GPC_ON = "Object.defineProperty(navigator, 'globalPrivacyControl', {get: () => true})"
DNT_ON = "Object.defineProperty(navigator, 'doNotTrack', {get: () => '1'})"


def path(event: dict[str, Any]) -> str:
    return urlsplit(str(event["url"])).path


def of_type(events: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return sorted((e for e in events if e["type"] == type_), key=lambda e: e["ts"])


def settle(page: Page, recorder: Recorder) -> None:
    """Send what the beacon still queues and wait until the collector answered every request."""
    page.evaluate("clickstream.flush()")
    wait_for(lambda: not recorder.pending, 10, "every /collect request to be answered", page=page)


def local_storage(page: Page, key: str) -> Any:
    return page.evaluate("k => JSON.parse(localStorage.getItem(k))", key)


def test_page_view_on_load_carries_utm_referrer_and_first_party_ids(site: DemoSite, page: Page,
                                                                    recorder: Recorder) -> None:
    before = int(time.time() * 1000)
    page.goto(f"{site.url}/lp/analytics?{UTM_QUERY}&hero=B", referer=REFERRER)

    events = site.wait_spooled(lambda evs: of_type(evs, "page_view"), "the landing page view")
    [view] = of_type(events, "page_view")
    assert view["url"] == page.url
    assert view["utm"] == UTM
    assert view["referrer"] == REFERRER
    assert view["site_id"] == site.config.site_id
    assert view["title"] == "Web analytics you host"
    assert view["lang"] == "en-US"
    assert view["screen"]["w"] > 0 and view["screen"]["h"] > 0
    assert before <= view["ts"] <= int(time.time() * 1000)
    # The anonymous id is a first-party cookie for a year, SameSite=Lax, mirrored in localStorage.
    [cookie] = [c for c in page.context.cookies() if c["name"] == "cs_id"]
    assert cookie["value"] == view["anonymous_id"] == page.evaluate("clickstream.anonymousId()")
    assert cookie["sameSite"] == "Lax"
    assert abs(cookie["expires"] - (time.time() + 365 * 86400)) < 120
    assert page.evaluate("localStorage.getItem('cs_id')") == view["anonymous_id"]
    assert local_storage(page, "cs_s")["i"] == view["session_id"] == page.evaluate("clickstream.sessionId()")
    site.audit(recorder)


def test_spa_navigation_sends_a_page_view_per_new_url(site: DemoSite, page: Page, recorder: Recorder) -> None:
    landing = f"{site.url}/lp/analytics?hero=A"
    page.goto(landing)
    site.wait_spooled(lambda evs: of_type(evs, "page_view"), "the landing page view")

    page.click("header a[href='/pricing']")  # history.pushState
    page.evaluate("history.replaceState({}, '', location.href); location.hash = 'faq'")  # same URL: no view
    page.evaluate("history.replaceState({}, '', '/features')")  # replaces the #faq entry
    page.go_back()  # popstate, back to /pricing
    site.wait_spooled(lambda evs: len(of_type(evs, "page_view")) >= 4, "four page views")
    settle(page, recorder)

    views = of_type(site.spooled(), "page_view")
    assert [path(v) for v in views] == ["/lp/analytics", "/pricing", "/features", "/pricing"]
    assert views[1]["title"] == "Pricing"  # sent after the app updated the title
    assert views[1]["referrer"] == landing  # an SPA view's referrer is the previous page
    assert views[3]["referrer"] == f"{site.url}/features"
    assert len({(v["session_id"], v["anonymous_id"]) for v in views}) == 1
    site.audit(recorder)


def test_data_cs_event_and_outbound_link_clicks(site: DemoSite, page: Page, recorder: Recorder) -> None:
    page.route("https://clickhouse.com/**", lambda route: route.fulfill(body="<title>docs</title>",
                                                                         content_type="text/html"))
    page.goto(f"{site.url}/lp/privacy?hero=A")
    page.click("header a[href='/pricing']")
    page.click("#cta")
    events = site.wait_spooled(lambda evs: of_type(evs, "cta_click"), "the cta_click event")
    [cta] = of_type(events, "cta_click")
    assert cta["props"] == {"plan": "team", "placement": "pricing"}
    assert path(cta) == "/pricing"

    page.click("text=ClickHouse docs")  # leaves the site: the click goes out with the page
    page.wait_for_url("https://clickhouse.com/docs")
    events = site.wait_spooled(lambda evs: of_type(evs, "click"), "the outbound click")
    [click] = of_type(events, "click")
    assert click["props"] == {"href": "https://clickhouse.com/docs"}
    assert click["session_id"] == cta["session_id"]
    site.audit(recorder)


def test_expose_records_the_assignment_and_attaches_variants_to_later_events(
        site: DemoSite, page: Page, recorder: Recorder) -> None:
    page.goto(f"{site.url}/lp/privacy?hero=A")
    events = site.wait_spooled(lambda evs: of_type(evs, "page_view"), "the landing page view")
    # The page head exposed hero=A through the loader stub: replayed before the first page view.
    assert of_type(events, "page_view")[0]["variants"] == {"hero": "A"}

    page.evaluate("clickstream.expose('pricing_table', 'v2')")
    events = site.wait_spooled(lambda evs: len(of_type(evs, "exposure")) == 2, "the second exposure")
    exposure = of_type(events, "exposure")[-1]
    assert exposure["props"] == {"experiment": "pricing_table", "variant": "v2"}
    assert exposure["variants"] == {"hero": "A", "pricing_table": "v2"}

    page.evaluate("clickstream.track('plan_compare', {rows: 3, annual: true})")
    page.goto(f"{site.url}/features")  # a new page load: the assignment is persisted
    events = site.wait_spooled(lambda evs: len(of_type(evs, "page_view")) == 2 and of_type(evs, "plan_compare"),
                               "the custom event and the second page view")
    [custom] = of_type(events, "plan_compare")
    assert custom["props"] == {"rows": 3, "annual": True}
    assert custom["variants"] == {"hero": "A", "pricing_table": "v2"}
    assert of_type(events, "page_view")[1]["variants"] == {"hero": "A", "pricing_table": "v2"}
    site.audit(recorder)


def test_api_misuse_and_tampered_storage_never_throw_nor_send_invalid_events(
        site: DemoSite, page: Page, recorder: Recorder) -> None:
    page.context.add_cookies([{"name": "cs_id", "value": "not%20an%20id", "url": site.url}])
    page.add_init_script("""if (!sessionStorage.getItem('tampered')) {
        sessionStorage.setItem('tampered', '1');
        localStorage.setItem('cs_s', '{"i": "bad id", "t": "soon"}');
        localStorage.setItem('cs_q', '[{"e": 5, "t": 0}, 7, null]');
        localStorage.setItem('cs_v', '[1, 2]');
    }""")
    page.goto(f"{site.url}/lp/analytics?hero=B")
    page.evaluate("""() => {
        const cs = window.clickstream, many = {};
        for (let i = 0; i < 40; i++) many['k' + i] = i;
        cs.track('Bad Type!'); cs.track(); cs.track(null, null); cs.track('ok', 'not props');
        cs.expose('bad id!', 'x'); cs.expose(undefined, undefined); cs.expose('exp', {});
        cs.track('weird_props', {nan: NaN, inf: Infinity, obj: {a: 1}, arr: [1, 2], long: 'x'.repeat(2000),
                                 nul: null, yes: true, '': 'empty key'});
        cs.track('many_props', many);
        cs.push(['track', 'pushed_event', {via: 'push'}]); cs.push(['nope']); cs.push(null); cs.push(['push', 1]);
    }""")
    events = site.wait_spooled(lambda evs: {"weird_props", "many_props", "pushed_event", "ok"}
                               <= {e["type"] for e in evs}, "the sanitised events")
    settle(page, recorder)
    events = site.spooled()
    assert {e["type"] for e in events} == {"page_view", "exposure", "ok", "weird_props", "many_props",
                                           "pushed_event"}
    [weird] = of_type(events, "weird_props")
    assert weird["props"] == {"nan": "NaN", "inf": "Infinity", "obj": "[object Object]", "arr": "1,2",
                              "long": "x" * 512, "nul": "", "yes": True}
    assert len(of_type(events, "many_props")[0]["props"]) == 32
    assert of_type(events, "pushed_event")[0]["props"] == {"via": "push"}
    # A tampered cookie or session is replaced by fresh, valid ids.
    view = of_type(events, "page_view")[0]
    assert view["anonymous_id"] != "not an id" and view["session_id"] != "bad id"
    assert view["variants"] == {"hero": "B"}
    site.audit(recorder)


def test_beacon_delivers_on_pagehide(site: DemoSite, page: Page, recorder: Recorder) -> None:
    # Record what navigator.sendBeacon is given (a test probe; the real call still happens).
    page.add_init_script("""{ const send = navigator.sendBeacon.bind(navigator);
        navigator.sendBeacon = (url, data) => {
            localStorage.setItem('probe_beacon', JSON.stringify({url, kind: typeof data, data}));
            return send(url, data);
        }; }""")
    page.goto(f"{site.url}/lp/analytics?hero=A")
    wait_for(lambda: any(e["type"] == "page_view" for e in recorder.acked), 10, "the page view to be acknowledged",
             page=page)

    page.evaluate("clickstream.track('leaving_now', {step: 1})")  # queued for a second...
    page.goto(f"{site.collector.url}/healthz")  # ...but the page goes first
    events = site.wait_spooled(lambda evs: of_type(evs, "leaving_now"), "the event sent on pagehide")
    assert of_type(events, "leaving_now")[0]["props"] == {"step": 1}
    assert "leaving_now" not in {e["type"] for e in recorder.sent}  # not by fetch

    page.goto(f"{site.url}/features")
    probe = page.evaluate("JSON.parse(localStorage.getItem('probe_beacon'))")
    assert probe["url"] == f"{site.collector.url}/collect"
    assert probe["kind"] == "string"  # a string body goes as text/plain: no CORS preflight
    # with it, the page's engagement report when it lasted a second or more
    assert [e["type"] for e in json.loads(probe["data"]) if e["type"] != "engagement"] == ["leaving_now"]
    site.audit(recorder)


def test_retry_after_503_delivers_each_event_exactly_once(site: DemoSite, page: Page, recorder: Recorder) -> None:
    bodies: list[list[dict[str, Any]]] = []

    def collect(route: Route) -> None:
        bodies.append(json.loads(route.request.post_data or "[]"))
        if len(bodies) == 1:  # the collector's back-pressure answer (docs/architecture.md POST /collect)
            route.fulfill(status=503, headers={"Access-Control-Allow-Origin": "*", "Retry-After": "1"},
                          content_type="application/json",
                          body='{"accepted":0,"rejected":0,"errors":[],"error":"spool_full"}')
        else:
            route.continue_()

    page.route(f"{site.collector.url}/collect", collect)
    page.goto(f"{site.url}/lp/analytics?hero=B")
    wait_for(lambda: bodies, 10, "the first batch", page=page)
    refused = {e["event_id"] for e in bodies[0]}
    site.wait_spooled(lambda evs: refused <= {e["event_id"] for e in evs}, "the refused batch to be retried",
                      page=page)
    page.evaluate("clickstream.flush()")
    wait_for(lambda: not local_storage(page, "cs_q"), 10, "the localStorage retry queue to empty",
             detail=lambda: local_storage(page, "cs_q"), page=page)

    assert any({e["event_id"] for e in body} == refused for body in bodies[1:]), "the same events were resent"
    spooled = [e["event_id"] for e in site.spooled()]
    sent = {e["event_id"] for body in bodies for e in body}
    assert sorted(spooled) == sorted(sent)  # every event once, the refused ones included
    site.audit(recorder)


def test_failed_batches_wait_in_local_storage_for_the_next_page(site: DemoSite, page: Page,
                                                                 recorder: Recorder) -> None:
    collect = f"{site.collector.url}/collect"
    page.route(collect, lambda route: route.abort("connectionrefused"))  # the collector is down
    page.goto(f"{site.url}/lp/analytics?hero=A")
    page.evaluate("clickstream.track('while_down')")
    # Leave while every failed batch waits for its next attempt (at least 0.5 s away, none in flight).
    wait_for(lambda: page.evaluate("""() => {
        const q = JSON.parse(localStorage.getItem('cs_q') || '[]'), now = Date.now();
        const types = q.flatMap(b => b.e.map(e => e.type));
        return ['exposure', 'page_view', 'while_down'].every(t => types.includes(t))
            && q.every(b => b.n >= 1 && b.t - now > 500 && b.t - now < 30000);
    }"""), 20, "the failed batches to wait in localStorage", detail=lambda: local_storage(page, "cs_q"))
    page.goto(f"{site.collector.url}/healthz")
    # only the engagement report may have gone out: by sendBeacon on pagehide, which page.route cannot stop
    assert {e["type"] for e in site.spooled()} <= {"engagement"}
    page.unroute(collect)

    page.goto(f"{site.url}/features")  # the collector is back: this page resends what was left
    events = site.wait_spooled(lambda evs: {"exposure", "while_down"} <= {e["type"] for e in evs}
                               and len(of_type(evs, "page_view")) == 2, "the left-behind events")
    settle(page, recorder)
    wait_for(lambda: not local_storage(page, "cs_q"), 10, "the retry queue to empty")
    events = site.spooled()
    # each page exposes the hero: one exposure per page load (engagement depends on time on page)
    assert sorted(e["type"] for e in events if e["type"] != "engagement") == [
        "exposure", "exposure", "page_view", "page_view", "while_down"]
    assert [path(v) for v in of_type(events, "page_view")] == ["/lp/analytics", "/features"]
    site.audit(recorder)


def test_session_rotates_after_30_minutes_idle_and_on_a_new_campaign(site: DemoSite, page: Page,
                                                                     recorder: Recorder) -> None:
    def idle(minutes: int) -> None:  # age the stored session's last activity
        page.evaluate("""m => { const s = JSON.parse(localStorage.getItem('cs_s'));
            s.t -= m * 60000; localStorage.setItem('cs_s', JSON.stringify(s)) }""", minutes)

    paid = f"{site.url}/lp/analytics?utm_source=google&utm_medium=cpc&utm_campaign=spring&hero=A"
    page.goto(paid)
    page.goto(f"{site.url}/features")
    page.goto(paid)  # the same campaign again: the same session
    page.goto(f"{site.url}/lp/privacy?utm_source=newsletter&utm_medium=email&utm_campaign=launch")
    idle(31)
    page.goto(f"{site.url}/pricing")
    idle(29)
    page.goto(f"{site.url}/features")
    views = of_type(site.wait_spooled(lambda evs: len(of_type(evs, "page_view")) == 6, "six page views"),
                    "page_view")

    s1, s2, s3 = views[0]["session_id"], views[3]["session_id"], views[4]["session_id"]
    assert [v["session_id"] for v in views] == [s1, s1, s1, s2, s3, s3]
    assert len({s1, s2, s3}) == 3
    assert len({v["anonymous_id"] for v in views}) == 1
    paid_utm = {"source": "google", "medium": "cpc", "campaign": "spring"}
    assert [v.get("utm") for v in views] == [paid_utm, paid_utm, paid_utm,
                                             {"source": "newsletter", "medium": "email", "campaign": "launch"},
                                             None, None]
    site.audit(recorder)


def test_privacy_signals_with_data_respect_dnt_send_and_store_nothing(
        demo_factory: Callable[..., DemoSite], server_factory: Callable[..., Any],
        new_context: Callable[..., BrowserContext], recorder: Recorder) -> None:
    collector = server_factory("collector")
    strict = demo_factory(collector, respect_dnt=True)
    lax = demo_factory(collector)
    for signal in (GPC_ON, DNT_ON):
        context = new_context()
        context.add_init_script(signal)
        page = recorder.watch(context.new_page())
        page.goto(f"{strict.url}/lp/analytics?utm_source=x&hero=B")
        page.click("header a[href='/pricing']")
        page.click("#cta")
        page.evaluate("clickstream.track('must_not_leave'); clickstream.flush()")
        assert page.evaluate("[clickstream.anonymousId(), clickstream.sessionId()]") == ["", ""]
        assert [c["name"] for c in context.cookies() if c["name"].startswith("cs_")] == []
        assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('cs_'))") == []
        page.goto(f"{collector.url}/healthz")  # pagehide: no beacon either

    # Controls on the same collector: GPC without data-respect-dnt, and data-respect-dnt without a signal.
    context = new_context()
    context.add_init_script(GPC_ON)
    recorder.watch(context.new_page()).goto(f"{lax.url}/lp/privacy?hero=A")
    recorder.watch(new_context().new_page()).goto(f"{strict.url}/features?hero=A")
    events = strict.wait_spooled(lambda evs: len(of_type(evs, "page_view")) == 2, "the two control page views")
    assert sorted(path(v) for v in of_type(events, "page_view")) == ["/features", "/lp/privacy"]
    assert {path(e) for e in recorder.sent + events} == {"/features", "/lp/privacy"}
    strict.audit(recorder)


def test_beacon_js_is_served_cacheable_and_small(site: DemoSite) -> None:
    with site.collector.client() as http:
        response = http.get("/beacon.js", headers={"Accept-Encoding": "gzip"})
        raw = http.get("/beacon.js", headers={"Accept-Encoding": "identity"})
        again = http.get("/beacon.js", headers={"If-None-Match": response.headers["etag"]})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert "max-age" in response.headers["cache-control"]
    assert response.headers["content-encoding"] == "gzip"
    # the budget with every feature in (BENCHMARKS.md "beacon.js size"): 4 KB gzipped on the wire
    assert int(response.headers["content-length"]) <= 4 * 1024
    assert response.content == raw.content  # httpx decodes the gzip: the same minified script
    assert "content-encoding" not in raw.headers
    assert again.status_code == 304
