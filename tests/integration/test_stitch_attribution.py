"""Attribution through the real path (POST /collect -> spool -> flusher -> chDB -> POST /stitch) against
an independent plain-Python computation over the same generated visitor histories; and "frozen
means frozen".

The generator knows each session's traffic source by construction (direct, organic search by
referrer, paid search and email by UTM), so the expectation never calls the code under test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from collections.abc import Iterator
from typing import Any

import jsonschema
import orjson
import pytest

from tests.conftest import SCHEMAS_DIR, Server, now_ms, sql_rows, start_server, wait_for, wait_for_fold

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
TOKEN = "tok"
LOOKBACK_DAYS = 30
DAY = 86_400_000
LEAD_SCHEMA = jsonschema.Draft202012Validator(orjson.loads((SCHEMAS_DIR / "lead_created.schema.json").read_bytes()))
EXPERIMENTS = {"hero": ["control", "B"], "cta": ["red", "green"]}
PATHS = ["/", "/pricing", "/features", "/blog/post-1", "/signup"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server("serve", tmp_path_factory.mktemp("stitch-attr") / "data", {
        "CLICKSTREAM_STITCH_TOKEN": TOKEN, "CLICKSTREAM_SQL_PASSWORD": "adm",
        "CLICKSTREAM_MAX_EVENT_AGE_S": str(50 * 86_400),  # histories span 40 days
        "CLICKSTREAM_ATTRIBUTION_LOOKBACK_DAYS": str(LOOKBACK_DAYS),
        "CLICKSTREAM_FOLD_INTERVAL_S": "0.5",  # v_variant_lift reads the fold's variant_daily
    })
    yield s
    s.stop()


# -- the generated world -------------------------------------------------------------------------
@dataclasses.dataclass
class GenSession:
    site: str
    session_id: str
    start: int
    kind: str
    touch: dict[str, str]
    landing_path: str
    bot: bool = False
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def source(kind: str, rng: random.Random, n: int) -> tuple[str, str, dict[str, str]]:
    """(query string, referrer, expected touch without landing_path/ts) of a landing page view."""
    empty = dict.fromkeys(("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
                           "referrer_host"), "")
    if kind == "direct":
        return "", "", {**empty, "channel": "direct"}
    if kind == "organic":
        host = rng.choice(["google.com", "duckduckgo.com", "bing.com"])
        return "", f"https://www.{host}/search?q=crm", {**empty, "referrer_host": host, "channel": "organic_search"}
    if kind == "paid":
        campaign = f"brand_{n}"
        return (f"?utm_source=google&utm_medium=cpc&utm_campaign={campaign}&utm_term=crm", "https://www.google.com/",
                {**empty, "utm_source": "google", "utm_medium": "cpc", "utm_campaign": campaign, "utm_term": "crm",
                 "referrer_host": "google.com", "channel": "paid_search"})
    campaign = f"june_{n}"
    return (f"?utm_source=newsletter&utm_medium=email&utm_campaign={campaign}&utm_content=hero", "",
            {**empty, "utm_source": "newsletter", "utm_medium": "email", "utm_campaign": campaign,
             "utm_content": "hero", "channel": "email"})


def make_session(visitor: str, sid: str, start: int, kind: str, rng: random.Random, *, site: str = "shop.example",
                 variants: dict[str, str] | None = None, bot: bool = False) -> GenSession:
    query, referrer, touch = source(kind, rng, rng.randrange(3))
    path = rng.choice(PATHS)
    s = GenSession(site, sid, start, kind, touch, path, bot)
    url = f"https://{site}{path}{query}"
    first: dict[str, Any] = {"type": "page_view", "url": url, "referrer": referrer}
    if variants:
        first["variants"] = variants
    pages = [first]
    previous = url
    for i in range(rng.randrange(3)):  # internal navigation: no UTM, same-site referrer
        nxt = f"https://{site}{rng.choice(PATHS)}"
        pages.append({"type": "page_view" if i % 2 == 0 else "click", "url": nxt, "referrer": previous})
        previous = nxt
    for i, page in enumerate(pages):
        event = {"site_id": site, "anonymous_id": visitor, "session_id": sid, "ts": start + i * 20_000,
                 "event_id": str(uuid.uuid4()), **page}
        if not event["referrer"]:
            del event["referrer"]
        s.events.append(event)
    return s


def random_variants(rng: random.Random) -> dict[str, str] | None:
    if rng.random() < 0.35:
        return None
    chosen = rng.sample(sorted(EXPERIMENTS), rng.randint(1, 2))
    return {exp: rng.choice(EXPERIMENTS[exp]) for exp in chosen}


def generate(rng: random.Random, now: int) -> list[tuple[str, list[GenSession], dict[str, Any]]]:
    """Visitors: (anonymous_id, sessions, stitch body). Special cases: a bot session (visitor 0), a
    second site (visitor 1), a campaign just outside the lookback window (visitor 2), only direct
    traffic (visitor 3)."""
    visitors = []
    for v in range(12):
        anon = f"gen-{v}-{uuid.uuid4().hex[:6]}"
        count = rng.randint(2, 6)
        starts = sorted(rng.sample(range(now - 40 * DAY, now - 2 * 3_600_000, 60_000), count))
        kinds = ["direct"] * count if v == 3 else [rng.choice(["direct", "organic", "paid", "email"])
                                                   for _ in starts]
        if v == 2:
            starts = [now - (LOOKBACK_DAYS + 5) * DAY, *sorted(rng.sample(range(now - 5 * DAY, now - DAY, 60_000), 3))]
            kinds = ["paid", "direct", "organic", "direct"]
        sessions = [make_session(anon, f"{anon}-s{i}", start, kind, rng, variants=random_variants(rng))
                    for i, (start, kind) in enumerate(zip(starts, kinds, strict=True))]
        if v == 0:
            sessions.insert(0, make_session(anon, f"{anon}-bot", starts[0] - 3_600_000, "paid", rng,
                                            variants={"hero": "B", "cta": "green"}, bot=True))
        human = [s for s in sessions if not s.bot]
        k = rng.randint(1, len(human))  # sessions after the k-th happen after the conversion
        occurred = max(e["ts"] for e in human[k - 1].events) + 60_000
        if v == 1:  # the latest session before the conversion is on another site
            sessions.append(make_session(anon, f"{anon}-blog", occurred - 50_000, "email", rng, site="blog.example",
                                         variants={"hero": "B"}))
        body: dict[str, Any] = {"lead_id": f"lead-{anon}", "anonymous_id": anon}
        body["occurred_at"] = occurred if v % 2 else rfc3339(occurred, offset_h=2 if v % 4 == 0 else 0)
        if v % 3 == 0 or v == 1:
            body["session_id"] = human[rng.randrange(k)].session_id
        if v == 5:
            body["site_id"] = "shop.example"
        visitors.append((anon, sessions, body))
    return visitors


def rfc3339(ms: int, offset_h: int = 0) -> str:
    zone = dt.timezone(dt.timedelta(hours=offset_h))
    moment = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)).astimezone(zone)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_ms(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return round(dt.datetime.fromisoformat(value).timestamp() * 1000)


def expected(sessions: list[GenSession], body: dict[str, Any]) -> dict[str, Any]:
    """The lead_created fields, computed from the generator's own records."""
    occurred = to_ms(body["occurred_at"])
    seen = sorted((s for s in sessions if not s.bot and s.start <= occurred), key=lambda s: (s.start, s.session_id))
    named = [s for s in seen if s.session_id == body.get("session_id")]
    site = body.get("site_id") or (named[0].site if named else seen[-1].site)
    window = [s for s in seen if s.site == site and s.start >= occurred - LOOKBACK_DAYS * DAY]

    def touch(s: GenSession) -> dict[str, Any]:
        return {**s.touch, "landing_path": s.landing_path, "ts": rfc3339(s.start)}

    campaign = [s for s in window if s.kind != "direct"]
    first = touch(campaign[0]) if campaign else touch(window[0])
    last = touch(campaign[-1]) if campaign else first
    converting = ([s for s in window if s.session_id == body["session_id"]] if "session_id" in body
                  else window[-1:])
    firsts: dict[str, tuple[int, str]] = {}
    for s in sessions:
        if s.bot or s.site != site:
            continue
        for e in s.events:
            for exp, variant in e.get("variants", {}).items():
                if e["ts"] <= occurred and (exp not in firsts or (e["ts"], variant) < firsts[exp]):
                    firsts[exp] = (e["ts"], variant)
    return {
        "lead_id": body["lead_id"], "anonymous_id": body["anonymous_id"], "site_id": site,
        "session_id": body.get("session_id") or (converting[0].session_id if converting else ""),
        "occurred_at": rfc3339(occurred), "landing_path": converting[0].landing_path if converting else "",
        "first_touch": first, "last_touch": last, "variants": {k: v for k, (_, v) in sorted(firsts.items())},
    }


# -- helpers ----------------------------------------------------------------------------------------
def collect(server: Server, events: list[dict[str, Any]], ua: str = BROWSER) -> None:
    client = server.client(headers={"User-Agent": ua})
    for start in range(0, len(events), 100):
        response = client.post("/collect", json=events[start : start + 100])
        assert response.status_code == 202 and response.json()["rejected"] == 0, response.text


def stitch(server: Server, body: dict[str, Any]) -> Any:
    return server.client().post("/stitch", json=body, headers={"Authorization": f"Bearer {TOKEN}"})






# -- tests --------------------------------------------------------------------------------------------
def test_attribution_equals_an_independent_computation_on_generated_histories(server: Server) -> None:
    rng = random.Random(20240601)
    visitors = generate(rng, now_ms())
    events = [e for _, sessions, _ in visitors for s in sessions if not s.bot for e in s.events]
    bots = [e for _, sessions, _ in visitors for s in sessions if s.bot for e in s.events]
    rng.shuffle(events)  # arrival order must not matter
    collect(server, events)
    collect(server, bots, ua=BOT)
    kinds = {s.kind for _, sessions, _ in visitors for s in sessions}
    assert kinds == {"direct", "organic", "paid", "email"}
    for anon, sessions, body in visitors:
        response = stitch(server, body)
        assert response.status_code == 201, response.text
        event = orjson.loads(response.content)
        LEAD_SCHEMA.validate(event)
        want = expected(sessions, body)
        assert {k: event[k] for k in want} == want, anon
    # the cases the rules distinguish really occur in the generated world
    wanted = [expected(sessions, body) for _, sessions, body in visitors]
    assert any(w["first_touch"] != w["last_touch"] for w in wanted)
    assert any(s.start > to_ms(body["occurred_at"]) for _, sessions, body in visitors for s in sessions)
    assert wanted[1]["site_id"] == "shop.example" and "hero" not in wanted[1]["variants"]  # blog session ignored
    assert wanted[2]["first_touch"]["channel"] == "direct"  # its paid session is outside the lookback window
    assert wanted[0]["first_touch"]["channel"] != "paid_search"  # the bot's paid session is ignored


def test_frozen_event_does_not_change_with_later_visits(server: Server) -> None:
    site = "frozen.example"
    t0 = now_ms() - 600_000
    first_visit = [
        {"type": "page_view", "site_id": site, "anonymous_id": "frozen-v", "session_id": "frozen-s1", "ts": t0,
         "url": f"https://{site}/spring-sale?utm_source=facebook&utm_medium=paid_social&utm_campaign=spring",
         "variants": {"hero": "control", "cta": "red"}},
        {"type": "page_view", "site_id": site, "anonymous_id": "frozen-w", "session_id": "frozen-w1", "ts": t0 + 1,
         "url": f"https://{site}/", "variants": {"hero": "B", "cta": "green"}},
    ]
    collect(server, first_visit)
    created = stitch(server, {"lead_id": "L-frozen", "anonymous_id": "frozen-v"})
    assert created.status_code == 201, created.text
    event = orjson.loads(created.content)
    assert event["variants"] == {"cta": "red", "hero": "control"}
    assert event["last_touch"]["utm_campaign"] == "spring"

    lead_row = "SELECT * FROM lead_events WHERE lead_id = 'L-frozen'"
    lift = (f"SELECT * FROM v_variant_lift WHERE site_id = '{site}' AND experiment_id IN ('hero', 'cta') "
            "ORDER BY experiment_id, variant_id")
    landing = f"SELECT landing_path, leads FROM v_landing_pages WHERE site_id = '{site}' ORDER BY landing_path"
    channels = (f"SELECT channel, utm_campaign, leads FROM v_channels WHERE site_id = '{site}' AND leads > 0 "
                "ORDER BY channel")
    wait_for(lambda: sql_rows(server, lead_row))
    wait_for_fold(server)  # the lead's converter is in variant_daily once a fold ran after it
    before = {q: sql_rows(server, q) for q in (lead_row, lift, landing, channels)}
    assert before[channels] == [["paid_social", "spring", 1]]
    assert [r[2:6] for r in before[lift]] == [  # variant_id, is_control, visitors, converters
        ["green", 1, 1, 0], ["red", 0, 1, 1], ["B", 0, 1, 0], ["control", 1, 1, 1]]

    later = [
        {"type": "page_view", "site_id": site, "anonymous_id": "frozen-v", "session_id": "frozen-s2",
         "ts": now_ms(), "url": f"https://{site}/black-friday?utm_source=newsletter&utm_medium=email&utm_campaign=bf",
         "variants": {"hero": "B", "cta": "green", "promo": "x"}},
    ]
    collect(server, later)
    wait_for(lambda: sql_rows(server, "SELECT count() FROM events WHERE session_id = 'frozen-s2'")[0][0] == 1)

    repeat = stitch(server, {"lead_id": "L-frozen", "anonymous_id": "frozen-v"})
    assert (repeat.status_code, repeat.content) == (200, created.content)
    wait_for_fold(server)
    after = {q: sql_rows(server, q) for q in before}
    assert after[lead_row] == before[lead_row]
    assert after[lift] == before[lift]
    assert after[channels] == before[channels]
    leads_by_path = {path: leads for path, leads in after[landing]}
    assert leads_by_path["/spring-sale"] == 1 and not leads_by_path.get("/black-friday")
    assert {path: leads for path, leads in before[landing]}["/spring-sale"] == 1
