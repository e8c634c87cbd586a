"""The event roll-ups (sql/0121_event_rollups.sql: page_daily, event_type_daily, event_prop_daily) and the
dashboard panels over them (reports/dashboard/queries.py) are exact: each equals a Python recount over
the generated events, through late events (a folded day gets an earlier event), a retried insert (kept
once), equal timestamps, a session crossing midnight, one spanning two midnights (cut after the day
after its start), a bot session and events with props; the panels also for ranges that start and end
mid-day and with a filter (roll-up days merged with the raw events of the rest). `clickstream
reconcile` catches a corrupted event roll-up and `--repair` restores it.

Real chDB (a temp directory), the real ingest path (`events_ingest` and its materialized views, the
flusher's dedup tokens), the real fold and the real CLI process for reconcile.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import connect, migrate
from reports.dashboard.queries import FILTERS, QUERIES, parameters
from reports.fold import fold
from tests.channel_reference import classify
from tests.integration.test_reconcile import cli
from tests.integration.test_rollups import DAY0, DAYS, SITES, Event, Store, generate, ms, order

PLANS = ("free", "pro", "team")


@dataclasses.dataclass
class PropEvent(Event):
    """An Event with props and a bot flag (the insert path takes both as they are)."""

    props: dict[str, str] = dataclasses.field(default_factory=dict)
    bot: int = 0

    def row(self) -> bytes:
        data = orjson.loads(super().row())
        data["props"] = self.props
        data["is_bot"] = self.bot
        return orjson.dumps(data)


def with_props(rng: random.Random, events: list[Event]) -> list[PropEvent]:
    """The events of test_rollups.generate with props on some clicks and signups (one key or two)."""
    out = []
    for e in events:
        props: dict[str, str] = {}
        kind = e.type
        if kind == "click" and rng.random() < 0.5:
            kind = "signup"
            props = {"plan": rng.choice(PLANS)}
            if rng.random() < 0.4:
                props["button"] = rng.choice(("hero", "footer"))
        elif kind == "click" and rng.random() < 0.3:
            props = {"button": rng.choice(("hero", "nav"))}
        out.append(PropEvent(e.site_id, e.anonymous_id, e.session_id, e.ts, kind, e.path, e.query, e.referrer,
                             e.referrer_host, seq=e.seq, event_id=e.event_id, props=props))
    return out


def extras() -> list[PropEvent]:
    """A bot session (left out everywhere), and a human session spanning two midnights (its events on the
    second day after its start are cut, as session_facts cuts them)."""
    day = DAY0 + dt.timedelta(days=5)
    bot = [PropEvent(SITES[0], "crawler", "crawler-s", ms(day, 3600 + i), "page_view", "/pricing", bot=1)
           for i in range(3)]
    long = [PropEvent(SITES[0], "marathon", "marathon-s", ms(day, 80_000), "page_view", "/"),
            PropEvent(SITES[0], "marathon", "marathon-s", ms(day + dt.timedelta(days=1), 40_000), "signup",
                      "/pricing", props={"plan": "pro"}),
            PropEvent(SITES[0], "marathon", "marathon-s", ms(day + dt.timedelta(days=2), 100), "page_view", "/blog")]
    return bot + long


@dataclasses.dataclass
class Session:
    site_id: str
    session_id: str
    started_ms: int
    channel: str
    events: list[Event]  # human, within the cut, in order

    @property
    def day(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.started_ms / 1000, dt.UTC).date()


def sessions_of(events: list[Event]) -> list[Session]:
    """Human sessions (no bot event) with their events of the start day and the next (sql/README.md)."""
    by: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        by[(e.site_id, e.session_id)].append(e)
    out = []
    for (site, sid), evs in by.items():
        if any(getattr(e, "bot", 0) for e in evs):
            continue
        evs.sort(key=order)
        start = evs[0]
        last_day = dt.datetime.fromtimestamp(start.ts / 1000, dt.UTC).date() + dt.timedelta(days=1)
        kept = [e for e in evs if dt.datetime.fromtimestamp(e.ts / 1000, dt.UTC).date() <= last_day]
        utm = dict(p.split("=") for p in start.query.lstrip("?").split("&")) if start.query else {}
        channel = classify(utm.get("utm_source", ""), utm.get("utm_medium", ""), start.referrer_host)
        out.append(Session(site, sid, start.ts, channel, kept))
    return out


def expected_rollups(sessions: list[Session]) -> dict[str, dict[tuple[Any, ...], tuple[int, int]]]:
    """table -> {(site, day, key...): (count, distinct visitors)} as the roll-ups should hold them."""
    acc: dict[str, dict[tuple[Any, ...], tuple[int, set[str]]]] = {
        "page_daily": {}, "event_type_daily": {}, "event_prop_daily": {}}

    def add(table: str, key: tuple[Any, ...], visitor: str) -> None:
        n, seen = acc[table].get(key, (0, set()))
        seen.add(visitor)
        acc[table][key] = (n + 1, seen)

    for s in sessions:
        for e in s.events:
            if e.type == "page_view":
                add("page_daily", (s.site_id, s.day, e.path), e.anonymous_id)
            add("event_type_daily", (s.site_id, s.day, e.type), e.anonymous_id)
            if e.type != "page_view":
                for key, value in getattr(e, "props", {}).items():
                    add("event_prop_daily", (s.site_id, s.day, e.type, key, value), e.anonymous_id)
    return {t: {k: (n, len(v)) for k, (n, v) in rows.items()} for t, rows in acc.items()}


def check_rollups(client: Client, events: list[Event]) -> None:
    want = expected_rollups(sessions_of(events))
    keys = {"page_daily": "path", "event_type_daily": "type", "event_prop_daily": "type, key, value"}
    counts = {"page_daily": "pageviews", "event_type_daily": "events", "event_prop_daily": "events"}
    for table, key in keys.items():
        rows = client.query(f"SELECT site_id, day, {key}, {counts[table]}, finalizeAggregation(visitors) "
                            f"FROM {table}").result_rows
        got = {tuple(r[:-2]): (r[-2], r[-1]) for r in rows}
        assert got == want[table], table


def check_range_views(client: Client, events: list[Event]) -> None:
    """v_pages_range, v_event_types_range, v_event_props_range for ranges of days: the range's sessions'
    events, visitors distinct over the range (never a sum of daily counts)."""
    sessions = sessions_of(events)
    for site in SITES:
        for first, last in ((DAY0, DAY0 + dt.timedelta(days=DAYS)), (DAY0 + dt.timedelta(days=3),
                                                                      DAY0 + dt.timedelta(days=6))):
            chosen = [s for s in sessions if s.site_id == site and first <= s.day <= last]
            want: dict[str, dict[tuple[str, ...], tuple[int, set[str]]]] = {"pages": {}, "types": {}, "props": {}}
            for s in chosen:
                for e in s.events:
                    keys: list[tuple[str, tuple[str, ...]]] = [("types", (e.type,))]
                    if e.type == "page_view":
                        keys.append(("pages", (e.path,)))
                    else:
                        keys += [("props", (e.type, k, v)) for k, v in getattr(e, "props", {}).items()]
                    for view, key in keys:
                        n, seen = want[view].get(key, (0, set()))
                        want[view][key] = (n + 1, seen | {e.anonymous_id})
            params = {"site": site, "from": first, "to": last}
            for view, columns in (("pages", "path"), ("types", "type"), ("props", "type, key, value")):
                name = {"pages": "v_pages_range", "types": "v_event_types_range", "props": "v_event_props_range"}[view]
                rows = client.query(f"SELECT {columns}, * EXCEPT (site_id, {columns}) FROM {name}("
                                    "site = {site:String}, from = {from:Date}, to = {to:Date})",
                                    parameters=params).result_rows
                got = {tuple(r[:-2]): (r[-2], r[-1]) for r in rows}
                assert got == {k: (n, len(v)) for k, (n, v) in want[view].items()}, (name, site, first)


def truth_panels(events: list[Event], site: str, lo: int, hi: int, channel: str, prop: str) -> dict[str, Any]:
    """What each event panel must show for sessions of `site` started in [lo, hi) ms (of `channel`)."""
    chosen = [s for s in sessions_of(events)
              if s.site_id == site and lo <= s.started_ms < hi and (not channel or s.channel == channel)]
    pages: dict[str, tuple[int, set[str]]] = {}
    types: dict[str, tuple[int, set[str]]] = {}
    keys: dict[str, int] = defaultdict(int)
    values: dict[tuple[str, str], tuple[int, set[str]]] = {}

    def add(into: dict[Any, tuple[int, set[str]]], key: Any, visitor: str) -> None:
        n, seen = into.get(key, (0, set()))
        seen.add(visitor)
        into[key] = (n + 1, seen)

    for s in chosen:
        for e in s.events:
            if e.type == "page_view":
                add(pages, e.path, e.anonymous_id)
                continue
            add(types, e.type, e.anonymous_id)
            props = getattr(e, "props", {})
            for key in props:
                keys[key] += 1
            if prop in props:
                add(values, (e.type, props[prop]), e.anonymous_id)
    return {
        "pages_top": {p: (n, len(v)) for p, (n, v) in pages.items()},
        "events_types": {t: (n, len(v)) for t, (n, v) in types.items()},
        "events_prop_keys": dict(keys),
        "events_props": {k: (n, len(v)) for k, (n, v) in values.items()},
        "totals": (len({s.events[0].anonymous_id for s in chosen}), len(chosen),
                   sum(e.type == "page_view" for s in chosen for e in s.events)),
    }


def run_panels(client: Client, site: str, lo: int, hi: int, channel: str, prop: str) -> dict[str, Any]:
    values: dict[str, Any] = {f: "" for f in FILTERS}
    values.update(site=site, from_ms=lo, to_ms=hi, prev_from_ms=lo - (hi - lo), channel=channel, prop_key=prop,
                  bucket_s=86400)

    def rows(name: str) -> Sequence[Sequence[Any]]:
        sql = QUERIES[name]
        return client.query(sql, parameters={p: values[p] for p in parameters(sql)}).result_rows

    totals = rows("totals")[0]
    return {
        "pages_top": {r[0]: (r[1], r[2]) for r in rows("pages_top")},
        "events_types": {r[0]: (r[1], r[2]) for r in rows("events_types")},
        "events_prop_keys": {r[0]: r[1] for r in rows("events_prop_keys")},
        "events_props": {(r[0], r[1]): (r[2], r[3]) for r in rows("events_props")},
        "totals": (totals[0], totals[2], totals[4]),
    }


#: (from, to) in ms: mid-day to mid-day, whole days, a minute around the midnight a session crosses, and
#: the two midnights the long session spans.
RANGES = [
    (ms(DAY0 + dt.timedelta(days=2), 13 * 3600), ms(DAY0 + dt.timedelta(days=6), 7.5 * 3600)),
    (ms(DAY0, 0), ms(DAY0 + dt.timedelta(days=DAYS), 0)),
    (ms(DAY0 + dt.timedelta(days=3), 86_370), ms(DAY0 + dt.timedelta(days=4), 30)),
    (ms(DAY0 + dt.timedelta(days=5), 0), ms(DAY0 + dt.timedelta(days=8), 0)),
]


def check_panels(client: Client, events: list[Event]) -> None:
    for site in SITES:
        for lo, hi in RANGES:
            for channel in ("", "email"):
                for prop in ("plan", "button"):
                    got = run_panels(client, site, lo, hi, channel, prop)
                    assert got == truth_panels(events, site, lo, hi, channel, prop), (site, lo, hi, channel, prop)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    migrate(client)
    yield Store(client)
    client.close()


def test_event_rollups_and_panels_equal_a_recount_through_late_events_and_retries(store: Store) -> None:
    rng = random.Random(11)
    events: list[Event] = [*with_props(rng, generate(rng, 600)), *extras()]
    half = len(events) // 2
    store.insert(events[:half])
    assert fold(store.client) is not None
    check_rollups(store.client, store.events)
    store.insert(events[half:])
    store.retry(events[half:], token=f"{2:017d}-test")  # the flusher's retry: dropped, kept once
    assert store.client.query("SELECT count() FROM events").result_rows == [(len(store.events),)]
    assert fold(store.client) is not None
    check_rollups(store.client, store.events)
    check_range_views(store.client, store.events)
    check_panels(store.client, store.events)
    # late: an earlier event in a folded session (equal ts to another, lower seq) with props, and a new
    # session on the first day
    some = next(e for e in store.events if e.session_id.endswith("-s0") and e.type == "page_view")
    late: list[Event] = [PropEvent(some.site_id, some.anonymous_id, some.session_id, some.ts - 1, "signup", "/late",
                      props={"plan": "team", "button": "late"}),
            PropEvent(some.site_id, some.anonymous_id, some.session_id, some.ts - 1, "page_view", "/late"),
            PropEvent(SITES[2], "latecomer", "latecomer-s", ms(DAY0, 10), "page_view", "/")]
    store.insert(late)
    run = fold(store.client)
    assert run is not None and DAY0 in run.days
    check_rollups(store.client, store.events)
    check_panels(store.client, store.events)


def test_reconcile_catches_a_corrupted_event_roll_up_and_repairs_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    rng = random.Random(5)
    day = DAY0 + dt.timedelta(days=3)
    try:
        migrate(client)
        store = Store(client)
        store.insert([*with_props(rng, generate(rng, 300)), *extras()])
        assert fold(client) is not None
        # a visitor too many on a page, and a property value that never happened
        client.command(f"INSERT INTO page_daily (site_id, day, path, pageviews, visitors) SELECT 'a.example', "
                       f"toDate('{day}'), '/pricing', 1, uniqExactState('intruder')")
        client.command(f"INSERT INTO event_prop_daily (site_id, day, type, key, value, events, visitors) SELECT "
                       f"'b.example', toDate('{day}'), 'signup', 'plan', 'bogus', 2, uniqExactState('x')")
    finally:
        client.close()
    code, out = cli(data_dir)
    assert code == 1, out
    assert f"DIFF page_daily {day} a.example" in out
    assert f"DIFF event_prop_daily {day} b.example" in out
    assert "DIFF event_type_daily" not in out
    code, out = cli(data_dir, "--repair")
    assert code == 0, out
    assert f"repaired 1 day(s): {day}" in out
    code, out = cli(data_dir)
    assert code == 0 and "checked: clean" in out, out
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    try:
        check_rollups(client, store.events)
    finally:
        client.close()
