"""The dashboard's server side on a real `clickstream serve` with the load model's traffic (`served`):
its credentials and cookie, every panel query of reports/dashboard/queries.py through the query port
(with every filter on), the funnel views for SQL users, custom event properties and revenue, each
against the model's ground truth (load.model.Truth, tests/funnel_reference.py)."""

from __future__ import annotations

import itertools
import time
from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from reports.dashboard import queries
from tests.funnel_reference import funnel, path_of
from tests.integration.query_port.conftest import SERVE_PASSWORD, USER, Served

DAY_MS = 86_400_000


def port(served: Served, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{served.sql_port}", timeout=60, **kwargs)


def values(served: Served, **overrides: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    out: dict[str, Any] = {"site": served.site, "from_ms": now - 7 * DAY_MS, "to_ms": now + 60_000,
                           "prev_from_ms": now - 14 * DAY_MS, "bucket_s": 86400, "prop_key": "plan",
                           "steps": ["/", "/pricing", "cta_click"], "window_s": 1800, "per_session": 0}
    out.update({name: "" for name in queries.FILTERS})
    out.update(overrides)
    return out


def wire(value: Any) -> str:
    """A query parameter as the page sends it (TSV-escaped; arrays as quoted literals)."""
    def tsv(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    if isinstance(value, list):
        return tsv("[" + ",".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in value) + "]")
    return tsv(str(value))


def run(client: httpx.Client, name: str, given: dict[str, Any], bitmaps: bool = True) -> list[dict[str, Any]]:
    """One panel query as static/dashboard.js sends it: POST /, the SQL as body, param_* in the URL
    (visitors from the roll-ups' bitmaps, or without `bitmaps` their uniqExact states)."""
    spec = queries.catalog(bitmaps)[name]
    params = {"default_format": "JSON", "output_format_json_quote_64bit_integers": "0",
              **{f"param_{p}": wire(given[p]) for p in spec["params"]}}  # type: ignore[union-attr]
    response = client.post("/", params=params, content=str(spec["sql"]).encode())
    assert response.status_code == 200, (name, response.text[:500])
    rows: list[dict[str, Any]] = orjson.loads(response.content)["data"]
    return rows


def test_credentials_cookie_and_logout(served: Served) -> None:
    with port(served) as anonymous:
        page = anonymous.get("/dashboard")
        assert page.status_code == 401 and "WWW-Authenticate" not in page.headers
        assert 'name="password"' in page.text and served.site not in page.text
        challenge = anonymous.get("/dashboard", params={"auth": "basic"})
        assert challenge.status_code == 401 and challenge.headers["WWW-Authenticate"].startswith("Basic ")
        assert anonymous.get("/dashboard/api/queries").status_code == 401
        assert anonymous.get("/dashboard/static/dashboard.js").status_code == 401
        assert anonymous.get("/dashboard/static/login.css").status_code == 200  # the form's styles only
        wrong = anonymous.post("/dashboard/login", data={"user": USER, "password": "nope"})
        assert wrong.status_code == 401 and "clickstream_dashboard" not in wrong.headers.get("set-cookie", "")
        assert anonymous.get("/dashboard", auth=(USER, "nope")).status_code == 401

    with port(served) as basic:
        page = basic.get("/dashboard", auth=(USER, SERVE_PASSWORD))
        assert page.status_code == 200 and "dashboard.js" in page.text
        cookie = page.headers["set-cookie"].lower()
        for attribute in ("secure", "httponly", "samesite=strict", "path=/"):
            assert attribute in cookie, cookie
        assert "default-src 'none'" in page.headers["content-security-policy"]
        script = basic.get("/dashboard/static/dashboard.js", auth=(USER, SERVE_PASSWORD))
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        vendored = basic.get("/dashboard/static/vendor/uPlot.iife.min.js", auth=(USER, SERVE_PASSWORD))
        assert vendored.status_code == 200 and vendored.text.startswith("/*! https://github.com/leeoniya/uPlot")

    with port(served) as anonymous:
        login = anonymous.post("/dashboard/login", data={"user": USER, "password": SERVE_PASSWORD})
        assert login.status_code == 303 and login.headers["location"] == "/dashboard"
        token = login.cookies["clickstream_dashboard"]
    # httpx keeps a Secure cookie for https only: send it as a browser on http://127.0.0.1 does.
    cookie_header = {"Cookie": f"clickstream_dashboard={token}"}
    with port(served, headers=cookie_header) as browser:
        # The cookie alone opens the page, its APIs and the query port (what the page's fetches send).
        assert browser.get("/dashboard").status_code == 200
        catalog = browser.get("/dashboard/api/queries")
        assert catalog.status_code == 200 and catalog.json() == queries.catalog()
        answer = browser.post("/", params={"default_format": "JSON"}, content=b"SELECT 1 AS one")
        assert answer.status_code == 200 and answer.json()["data"] == [{"one": 1}]
        # Credentials named in the request win over the cookie (never two ways at once).
        assert browser.post("/", content=b"SELECT 1", auth=(USER, "nope")).status_code == 403
        assert browser.post("/dashboard/logout").status_code == 303
    with port(served, headers=cookie_header) as stale:
        assert stale.get("/dashboard").status_code == 401
        assert stale.post("/", content=b"SELECT 1").status_code == 403


def test_every_panel_query_runs_through_the_port_with_every_filter(served: Served) -> None:
    filtered = values(served, channel="paid_search", utm_source="google", utm_medium="cpc",
                      utm_campaign="spring_sale", utm_term="crm", utm_content="", page="/pricing",
                      experiment="hero", variant="B")
    with port(served, auth=(USER, SERVE_PASSWORD)) as client:
        for name in queries.QUERIES:
            run(client, name, values(served))
            rows = run(client, name, filtered)
            if name.startswith("sources_") or name.startswith("pages_"):
                assert all(int(r.get("sessions", r.get("pageviews", 0))) >= 0 for r in rows)
        # The filters narrow: sessions with all of them are fewer than with none, and all paid_search.
        (everything,) = run(client, "totals", values(served))
        (narrow,) = run(client, "totals", filtered)
        assert 0 < narrow["sessions"] < everything["sessions"]
        assert [r["key"] for r in run(client, "sources_channel", filtered)] == ["paid_search"]


def test_totals_sources_and_revenue_equal_the_truth(served: Served) -> None:
    truth = served.truth
    sessions = truth.human_sessions()
    with port(served, auth=(USER, SERVE_PASSWORD)) as client:
        (totals,) = run(client, "totals", values(served))
        channels = run(client, "sources_channel", values(served))
        landing = run(client, "pages_landing", values(served))
        top = run(client, "pages_top", values(served))
    assert totals["sessions"] == len(sessions)
    assert totals["visitors"] == len({s["anonymous_id"] for s in sessions})
    assert totals["pageviews"] == sum(s["pageviews"] for s in sessions)
    assert totals["leads"] == len(truth.traffic.leads)
    assert totals["prev_sessions"] == 0 and totals["sessions_change"] is None
    by_channel = truth.revenue_by(lambda s: s["channel"])
    assert {r["key"]: {c: Decimal(str(a)) for c, a in r["revenue"].items() if Decimal(str(a))} for r in channels} == {
        key: by_channel.get(key, {}) for key in {s["channel"] for s in sessions}}
    by_landing = truth.revenue_by(lambda s: s["entry_path"])
    assert {r["path"]: {c: Decimal(str(a)) for c, a in r["revenue"].items() if Decimal(str(a))} for r in landing} == {
        key: by_landing.get(key, {}) for key in {s["entry_path"] for s in sessions}}
    human = {s["session_id"] for s in sessions}
    views = Counter(path_of(e["url"]) for e, _ in truth.traffic.events
                    if e["type"] == "page_view" and e["session_id"] in human)
    assert {r["path"]: r["pageviews"] for r in top} == dict(views)


def test_custom_event_properties_equal_the_truth(served: Served) -> None:
    human = {s["session_id"] for s in served.truth.human_sessions()}
    want: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, set()])
    for event, _ in served.truth.traffic.events:
        props = event.get("props") or {}
        if event["session_id"] in human and event["type"] != "page_view" and "plan" in props:
            want[(event["type"], str(props["plan"]))][0] += 1
            want[(event["type"], str(props["plan"]))][1].add(event["anonymous_id"])
    with port(served, auth=(USER, SERVE_PASSWORD)) as client:
        rows = run(client, "events_props", values(served, prop_key="plan"))
        keys = {r["key"] for r in run(client, "events_prop_keys", values(served))}
    assert {(r["type"], r["value"]): (r["events"], r["visitors"]) for r in rows} == {
        k: (n, len(v)) for k, (n, v) in want.items()}
    assert {"plan", "href", "engaged_ms", "revenue", "currency", "experiment"} <= keys


@pytest.mark.parametrize(("steps", "window_s"), [
    (["/", "/pricing", "cta_click"], 1800),
    (["/pricing", "/docs", "/signup", "purchase"], 600),
    (["exposure", "click"], 30),
])
def test_funnel_views_equal_the_window_funnel_reference(served: Served, steps: list[str], window_s: int) -> None:
    """v_funnel (per visitor) and v_funnel_sessions (per session), parameterized views for SQL users,
    and the dashboard's funnel query, against tests/funnel_reference.py."""
    human = {s["session_id"] for s in served.truth.human_sessions()}
    events = [e for e, _ in served.truth.traffic.events if e["session_id"] in human]
    client = served.client()
    try:
        for view, per in (("v_funnel", "visitor"), ("v_funnel_sessions", "session")):
            result = client.query(
                f"SELECT step, name, reached, conversion_rate, drop_off FROM {view}(site_id = {{site:String}}, "
                "steps = {steps:Array(String)}, window_s = {w:UInt64}, from = {f:DateTime64(3)}, "
                "to = {t:DateTime64(3)})",
                parameters={"site": served.site, "steps": steps, "w": window_s, "f": "2000-01-01 00:00:00",
                            "t": "2100-01-01 00:00:00"})
            rows = result.result_rows
            want = funnel(events, steps, window_s, per)
            assert [r[2] for r in rows] == want, view
            assert [r[1] for r in rows] == steps
            assert [r[3] for r in rows] == pytest.approx([w / want[0] for w in want])
            assert [r[4] for r in rows] == pytest.approx(
                [0.0] + [1 - b / a if a else 0.0 for a, b in itertools.pairwise(want)])
    finally:
        client.close()
    with port(served, auth=(USER, SERVE_PASSWORD)) as http:
        for per_session, per in ((0, "visitor"), (1, "session")):
            rows = run(http, "funnel", values(served, steps=steps, window_s=window_s, per_session=per_session))
            assert [r["reached"] for r in rows] == funnel(events, steps, window_s, per)


def _day_ms(ms: int) -> int:
    return ms // DAY_MS * DAY_MS


@pytest.mark.parametrize("bitmaps", [True, False], ids=["bitmaps", "uniq_states"])
@pytest.mark.parametrize("shape", ["partial_days", "today", "whole_days", "three_partial_days"])
def test_session_panels_over_roll_ups_and_partial_days_equal_the_truth(served: Served, shape: str,
                                                                         bitmaps: bool) -> None:
    """Ranges that start and end inside a UTC day: the session panels merge the day roll-ups' whole days
    with v_sessions' partial days (and the previous period's), the event panels read events of the
    range's sessions; every number equals Python over the model's sessions and events. Both variants of
    the queries: visitors as the roll-ups' bitmaps with the raw rows' visitor numbers looked up, and as
    uniqExact states (while a roll-up's bitmaps are being built)."""
    now = int(time.time() * 1000)
    human = served.truth.human_sessions()
    # "today" starts at the UTC midnight of the newest session's day: the model's sessions end 30 min
    # before it was generated (load/model.py), so just after midnight today itself has none yet.
    midnight = _day_ms(max(s["started_at"] for s in human))
    from_ms, to_ms = {"partial_days": (now - 40 * 3_600_000 - 17 * 60_000, now - 5 * 3_600_000 + 123),
                      "today": (midnight, now + 60_000),
                      "whole_days": (midnight - 2 * DAY_MS, midnight),
                      "three_partial_days": (now - 3 * DAY_MS - 7 * 3_600_000 + 1, now - 3_600_000)}[shape]
    prev_from_ms = from_ms - (to_ms - from_ms)
    bucket_s = 3600 if to_ms - from_ms <= 2 * DAY_MS else 86400
    given = values(served, from_ms=from_ms, to_ms=to_ms, prev_from_ms=prev_from_ms, bucket_s=bucket_s)
    current = [s for s in human if from_ms <= s["started_at"] < to_ms]
    previous = [s for s in human if prev_from_ms <= s["started_at"] < from_ms]
    assert current, "the model's traffic has sessions in the range"
    with port(served, auth=(USER, SERVE_PASSWORD)) as client:
        (totals,) = run(client, "totals", given, bitmaps)
        traffic = run(client, "traffic", given, bitmaps)
        sources = {d: run(client, f"sources_{d}", given, bitmaps) for d in ("channel", "utm_source", "utm_campaign")}
        top = run(client, "pages_top", given, bitmaps)
        types = run(client, "events_types", given, bitmaps)
    for prefix, rows in (("", current), ("prev_", previous)):
        assert totals[prefix + "sessions"] == len(rows)
        assert totals[prefix + "visitors"] == len({s["anonymous_id"] for s in rows})
        assert totals[prefix + "pageviews"] == sum(s["pageviews"] for s in rows)
        if rows:
            assert totals[prefix + "bounce_rate"] == pytest.approx(sum(s["is_bounce"] for s in rows) / len(rows))
            assert totals[prefix + "avg_duration_s"] == pytest.approx(sum(s["duration_s"] for s in rows) / len(rows))
        else:
            assert totals[prefix + "bounce_rate"] is None
    buckets: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in current:
        buckets[s["started_at"] // (bucket_s * 1000) * bucket_s].append(s)
    assert [(r["t"], r["sessions"], r["visitors"], r["pageviews"]) for r in traffic] == [
        (t, len(rows), len({s["anonymous_id"] for s in rows}), sum(s["pageviews"] for s in rows))
        for t, rows in sorted(buckets.items())]
    for dimension, rows in sources.items():
        want: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in current:
            want[s[dimension]].append(s)
        got = {r["key"]: (r["sessions"], r["visitors"]) for r in rows if r["sessions"]}
        assert got == {k: (len(v), len({s["anonymous_id"] for s in v})) for k, v in want.items()}, dimension
    ids = {s["session_id"] for s in current}
    events = [e for e, _ in served.truth.traffic.events if e["session_id"] in ids and e["ts"] >= from_ms]
    assert {r["path"]: r["pageviews"] for r in top} == dict(
        Counter(path_of(e["url"]) for e in events if e["type"] == "page_view"))
    assert {r["type"]: (r["events"], r["visitors"]) for r in types} == {
        t: (n, len({e["anonymous_id"] for e in events if e["type"] == t}))
        for t, n in Counter(e["type"] for e in events if e["type"] != "page_view").items()}
