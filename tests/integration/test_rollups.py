"""Roll-ups and range views are exact: every view equals an independent Python computation over the
same events, for several sites and ranges, after late events (a folded day gets a new event), retried
inserts, equal timestamps and sessions crossing midnight; a 7-day question reads 7 days.

Real chDB (a temp directory), the real ingest path (`events_ingest` and its materialized views, with
the flusher's dedup tokens and settings), the real fold (reports/fold.py). The expected numbers come
from the generated events alone: sessions, order of events (ts, seq, spool position), channels by
tests/channel_reference.py, visitors as Python sets.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from reports.fold import fold
from tests.channel_reference import classify

SITES = ("a.example", "b.example", "c.example")
DAY0 = dt.date(2026, 3, 1)
DAYS = 12
PATHS = ("/", "/pricing", "/features", "/blog")
#: (utm query, referrer, referrer host)
SOURCES = (("", "", ""), ("?utm_source=google&utm_medium=cpc&utm_campaign=spring", "", ""),
           ("?utm_source=newsletter&utm_medium=email", "", ""), ("", "https://www.google.com/", "google.com"),
           ("", "https://blog.partner.example/x", "blog.partner.example"))


def ms(day: dt.date, seconds: float) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000 + seconds * 1000)


@dataclasses.dataclass
class Event:
    site_id: str
    anonymous_id: str
    session_id: str
    ts: int
    type: str
    path: str
    query: str = ""
    referrer: str = ""
    referrer_host: str = ""
    seq: int = 0
    event_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    segment: str = ""
    offset: int = 0

    def row(self) -> bytes:
        return orjson.dumps({
            "type": self.type, "site_id": self.site_id, "anonymous_id": self.anonymous_id,
            "session_id": self.session_id, "ts": self.ts, "url": f"https://{self.site_id}{self.path}{self.query}",
            "event_id": self.event_id, "referrer": self.referrer, "seq": self.seq, "received_at": self.ts,
            "spool_segment": self.segment, "spool_offset": self.offset, "user_agent": "Mozilla/5.0", "is_bot": 0,
        })


class Store:
    """Events as ClickHouse holds them (the insert path) and as the test knows them."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []
        self.segments = 0

    def insert(self, batch: list[Event], *, token: str | None = None) -> None:
        """One insert as the flusher makes it: a new segment id (ids sort by creation), offsets in order."""
        self.segments += 1
        segment = f"{self.segments:017d}-test"
        for i, e in enumerate(batch):
            e.segment, e.offset = segment, i
        self.client.raw_insert("events_ingest", None, b"\n".join(e.row() for e in batch), fmt="JSONEachRow",
                               settings={**INSERT_SETTINGS, "insert_deduplication_token": token or segment})
        self.events += batch

    def retry(self, batch: list[Event], token: str) -> None:
        """The same insert again (a flusher retry after a lost answer): same rows, same token."""
        self.client.raw_insert("events_ingest", None, b"\n".join(e.row() for e in batch), fmt="JSONEachRow",
                               settings={**INSERT_SETTINGS, "insert_deduplication_token": token})


def generate(rng: random.Random, n_visitors: int) -> list[Event]:
    out: list[Event] = []
    for v in range(n_visitors):
        site = SITES[v % 3] if v % 5 else SITES[0]  # skew: site a gets more
        anon = f"v{v}"
        for s in range(rng.randint(1, 3)):
            day = DAY0 + dt.timedelta(days=rng.randrange(DAYS))
            t = ms(day, rng.uniform(0, 86_000))
            query, referrer, host = rng.choice(SOURCES)
            sid = f"{anon}-s{s}"
            n = rng.choice((1, 1, 2, 3, 5))
            for i in range(n):
                kind = "page_view" if i == 0 or rng.random() < 0.7 else "click"
                if i and rng.random() > 0.3:
                    t += rng.randint(1, 600_000)  # else: the same ms as the previous event (a tie)
                out.append(Event(site, anon, sid, t, kind, rng.choice(PATHS),
                                 query if i == 0 else "", referrer if i == 0 else "", host if i == 0 else "",
                                 seq=i if rng.random() < 0.5 else 0))
    # a session crossing midnight
    late = ms(DAY0 + dt.timedelta(days=3), 86_399.5)
    out += [Event(SITES[1], "night", "night-s", late, "page_view", "/", "?utm_source=newsletter&utm_medium=email"),
            Event(SITES[1], "night", "night-s", late + 2000, "page_view", "/pricing")]
    rng.shuffle(out)  # arrival order is not time order
    return out


def order(e: Event) -> tuple[int, int, str, int]:
    return e.ts, e.seq, e.segment, e.offset


def sessions_of(events: list[Event]) -> list[dict[str, Any]]:
    """One dict per session: the definitions of sql/README.md, computed here."""
    by: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        by[(e.site_id, e.session_id)].append(e)
    out = []
    for (site, sid), evs in by.items():
        evs.sort(key=order)
        start_day = dt.datetime.fromtimestamp(evs[0].ts / 1000, dt.UTC).date()
        evs = [e for e in evs if dt.datetime.fromtimestamp(e.ts / 1000, dt.UTC).date() <= start_day
               + dt.timedelta(days=1)]
        views = [e for e in evs if e.type == "page_view"]
        first = evs[0]
        utm = dict(p.split("=") for p in first.query.lstrip("?").split("&")) if first.query else {}
        engaged = len(views) >= 2 or len(evs) > len(views)
        out.append({
            "site_id": site, "session_id": sid, "anonymous_id": first.anonymous_id, "day": start_day,
            "pageviews": len(views), "events": len(evs), "entry_path": views[0].path if views else "",
            "exit_path": views[-1].path if views else "",
            "channel": classify(utm.get("utm_source", ""), utm.get("utm_medium", ""), first.referrer_host),
            "utm_source": utm.get("utm_source", ""), "utm_medium": utm.get("utm_medium", ""),
            "utm_campaign": utm.get("utm_campaign", ""), "duration_ms": evs[-1].ts - evs[0].ts,
            "is_engaged": int(engaged), "is_bounce": int(len(views) == 1 and not engaged),
        })
    return out


def in_range(s: dict[str, Any], site: str, first: dt.date, last: dt.date) -> bool:
    return bool(s["site_id"] == site and first <= s["day"] <= last)


def expected_traffic(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(sessions)
    return {"visitors": len({s["anonymous_id"] for s in sessions}), "sessions": n,
            "pageviews": sum(s["pageviews"] for s in sessions),
            "bounce_rate": sum(s["is_bounce"] for s in sessions) / n,
            "avg_duration_s": sum(s["duration_ms"] for s in sessions) / 1000 / n,
            "engaged_sessions": sum(s["is_engaged"] for s in sessions)}


def expected_by(sessions: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple[Any, ...], tuple[int, int, int]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for s in sessions:
        groups[tuple(s[k] for k in keys)].append(s)
    return {k: (len(v), len({s["anonymous_id"] for s in v}), sum(s["is_engaged"] for s in v))
            for k, v in groups.items()}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("rollups") / "clickhouse"
    client = connect(f"chdb://{path}")
    migrate(client)
    yield Store(client)
    client.close()


RANGES = [(DAY0, DAY0 + dt.timedelta(days=6)), (DAY0 + dt.timedelta(days=3), DAY0 + dt.timedelta(days=4)),
          (DAY0, DAY0 + dt.timedelta(days=DAYS)), (DAY0 + dt.timedelta(days=10), DAY0 + dt.timedelta(days=40))]


def check_views(store: Store) -> None:
    """Every view, every site, every range of RANGES, against the computation over store.events."""
    client = store.client
    sessions = sessions_of(store.events)
    got_sessions = {(r[0], r[1]): r[2:] for r in client.query(
        "SELECT site_id, session_id, anonymous_id, toDate(started_at), pageviews, events, entry_path, exit_path, "
        "channel, utm_source, utm_medium, utm_campaign, is_engaged, is_bounce FROM v_sessions").result_rows}
    assert got_sessions == {(s["site_id"], s["session_id"]): (
        s["anonymous_id"], s["day"], s["pageviews"], s["events"], s["entry_path"], s["exit_path"], s["channel"],
        s["utm_source"], s["utm_medium"], s["utm_campaign"], s["is_engaged"], s["is_bounce"]) for s in sessions}
    daily = {(r[0], r[1]): r[2:] for r in client.query(
        "SELECT site_id, day, visitors, sessions, pageviews, bounce_rate, avg_duration_s, engaged_sessions "
        "FROM v_daily_traffic").result_rows}
    by_day: dict[tuple[str, dt.date], list[dict[str, Any]]] = defaultdict(list)
    for s in sessions:
        by_day[(s["site_id"], s["day"])].append(s)
    assert set(daily) == set(by_day)
    for key, group in by_day.items():
        want = expected_traffic(group)
        assert daily[key][:3] == (want["visitors"], want["sessions"], want["pageviews"]), key
        assert daily[key][3] == pytest.approx(want["bounce_rate"], abs=1e-12)
        assert daily[key][4] == pytest.approx(want["avg_duration_s"], abs=1e-9)
        assert daily[key][5] == want["engaged_sessions"]
    for site in SITES:
        for first, last in RANGES:
            chosen = [s for s in sessions if in_range(s, site, first, last)]
            params = {"site": site, "from": first, "to": last}
            total = client.query("SELECT visitors, sessions, pageviews, engaged_sessions FROM v_traffic_range("
                                 "site = {site:String}, from = {from:Date}, to = {to:Date})",
                                 parameters=params).result_rows
            if chosen:
                want = expected_traffic(chosen)
                assert total == [(want["visitors"], want["sessions"], want["pageviews"], want["engaged_sessions"])]
                # exact distinct visitors over the range, not the sum of the daily counts
                assert want["visitors"] <= sum(daily[k][0] for k in daily if k[0] == site and first <= k[1] <= last)
            else:
                assert total == []
            landing = {(r[0],): r[1:] for r in client.query(
                "SELECT landing_path, sessions, visitors, engaged_sessions FROM v_landing_pages_range("
                "site = {site:String}, from = {from:Date}, to = {to:Date}) WHERE sessions > 0",
                parameters=params).result_rows}
            assert landing == expected_by([s for s in chosen if s["pageviews"]], ("entry_path",)), (site, first)
            channels = {r[:4]: r[4:] for r in client.query(
                "SELECT channel, utm_source, utm_medium, utm_campaign, sessions, visitors, engaged_sessions "
                "FROM v_channels_range(site = {site:String}, from = {from:Date}, to = {to:Date}) WHERE sessions > 0",
                parameters=params).result_rows}
            assert channels == expected_by(chosen, ("channel", "utm_source", "utm_medium", "utm_campaign"))
        everything = [s for s in sessions if s["site_id"] == site]
        landing_all = {(r[0],): r[1:] for r in client.query(
            "SELECT landing_path, sessions, visitors, engaged_sessions FROM v_landing_pages "
            "WHERE site_id = {site:String} AND sessions > 0", parameters={"site": site}).result_rows}
        assert landing_all == expected_by([s for s in everything if s["pageviews"]], ("entry_path",))
        channels_all = {r[:4]: r[4:] for r in client.query(
            "SELECT channel, utm_source, utm_medium, utm_campaign, sessions, visitors, engaged_sessions "
            "FROM v_channels WHERE site_id = {site:String} AND sessions > 0", parameters={"site": site}).result_rows}
        assert channels_all == expected_by(everything, ("channel", "utm_source", "utm_medium", "utm_campaign"))


def test_views_equal_an_independent_computation_through_late_events_and_retries(store: Store) -> None:
    rng = random.Random(10)
    events = generate(rng, 1500)
    half = len(events) // 2
    store.insert(events[:half])
    assert fold(store.client) is not None
    check_views(store)
    # the rest, in several inserts, one of them retried with its token (kept once)
    for start in range(half, len(events), 1000):
        store.insert(events[start:start + 1000])
    store.retry(events[half:half + 1000], token=f"{2:017d}-test")
    assert store.client.query("SELECT count() FROM events").result_rows == [(len(store.events),)]
    run = fold(store.client)
    assert run is not None and len(run.days) >= 2
    check_views(store)
    # late events for days already folded: an earlier event of an existing session (new landing page and
    # channel), an equal-ts event with a lower seq, and a new session on the first day
    some = next(e for e in store.events if e.session_id.endswith("-s0") and e.type == "page_view" and e.seq == 0)
    late = [Event(some.site_id, some.anonymous_id, some.session_id, some.ts - 1, "page_view", "/late",
                  "?utm_source=newsletter&utm_medium=email"),
            Event(SITES[2], "latecomer", "latecomer-s", ms(DAY0, 10), "page_view", "/"),
            Event(SITES[2], "latecomer", "latecomer-s", ms(DAY0, 10), "click", "/")]
    store.insert(late)
    run = fold(store.client)
    assert run is not None and DAY0 in run.days
    check_views(store)
    (entry, channel), = store.client.query("SELECT entry_path, channel FROM v_sessions WHERE session_id = {s:String}",
                                           parameters={"s": some.session_id}).result_rows
    assert (entry, channel) == ("/late", "email")
    # nothing dirty: a run rebuilds nothing and changes nothing
    again = fold(store.client)
    assert again is not None and again.days == ()
    check_views(store)


def rows_read(client: Client, sql: str, params: dict[str, Any]) -> dict[str, int]:
    """table -> rows the query reads after partition and primary-key pruning (EXPLAIN ESTIMATE)."""
    return {str(r[1]): int(r[3]) for r in client.query("EXPLAIN ESTIMATE " + sql, parameters=params).result_rows}


def test_a_seven_day_question_reads_seven_days(store: Store) -> None:
    """Rows read are at most those stored in the 7 days' partitions (every site: a granule of this small
    test holds them all; and the rows a rebuild of one site's day masked, sql/0123_fold_site_marks.sql,
    until a merge drops them), never the rest of history."""
    client = store.client
    first, last = DAY0 + dt.timedelta(days=2), DAY0 + dt.timedelta(days=8)
    params = {"site": SITES[0], "from": first, "to": last}
    parts = ("SELECT sum(rows) FROM system.parts WHERE database = currentDatabase() AND active "
             "AND table = {t:String}")

    def in_days(table: str) -> int:
        return int(client.query(parts + " AND partition_id BETWEEN {lo:String} AND {hi:String}",
                                parameters={"t": table, "lo": f"{first:%Y%m%d}", "hi": f"{last:%Y%m%d}"}
                                ).result_rows[0][0])

    def total(table: str) -> int:
        return int(client.query(parts, parameters={"t": table}).result_rows[0][0])

    read = rows_read(client, "SELECT count() FROM v_sessions WHERE site_id = {site:String} AND started_at >= "
                             "{from:Date} AND started_at < {to:Date} + 1", params)
    assert 0 < read["session_facts"] <= in_days("session_facts") < total("session_facts")
    for sql in ("SELECT * FROM v_traffic_range(site = {site:String}, from = {from:Date}, to = {to:Date})",
                "SELECT * FROM v_daily_traffic WHERE site_id = {site:String} "
                "AND day BETWEEN {from:Date} AND {to:Date}"):
        read = rows_read(client, sql, params)
        assert 7 <= read["traffic_daily"] <= in_days("traffic_daily") < total("traffic_daily"), sql
    read = rows_read(client, "SELECT * FROM v_landing_pages_range(site = {site:String}, from = {from:Date}, "
                             "to = {to:Date})", params)
    assert 0 < read["landing_daily"] <= in_days("landing_daily") < total("landing_daily")
