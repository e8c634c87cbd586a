"""Visitors as Roaring bitmaps of visitor numbers (sql/0122_visitor_bitmaps.sql, reports/fold.py NUMBER_SQL).

Real chDB per test, the real ingest path and fold (tests/integration/test_rollups.py's Store and event
generator, with equal timestamps, a session across midnight and late events). Checked against Python over
the generated events, not against the fold's own SQL:
- every visitor the roll-ups hold has exactly one number, dense per site from 1, never changed by a later
  fold, a late import or a numbering cut short;
- each roll-up row's bitmap holds exactly the numbers of that row's visitors;
- reconcile finds a bitmap that differs from the recount, and --repair restores it;
- the dashboard's panel queries give the same rows with the bitmaps as with the uniqExact states, over
  ranges of whole days, partial days and events the fold has not seen yet (raw rows with numbered and
  unnumbered visitors), with and without a filter; the page gets the bitmap queries only when every
  roll-up holds them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from reports import fold as fold_module
from reports.dashboard import queries
from reports.dashboard.app import Dashboard
from reports.fold import fold
from reports.query_port import QueryPort
from reports.query_port.config import QueryPortConfig
from reports.reconcile import reconcile
from tests.integration.test_rollups import DAY0, DAYS, SITES, Event, Store, generate, ms, sessions_of

DAY_MS = 86_400_000


@pytest.fixture
def store(chdb_client: Client) -> Store:
    """The events of a test on a migrated chDB in its temp directory (conftest.chdb_client)."""
    return Store(chdb_client)


def numbers(client: Client) -> dict[tuple[str, str], int]:
    """(site, visitor) -> number; fails on a visitor with two numbers."""
    rows = client.query("SELECT site_id, anonymous_id, n FROM visitor_numbers").result_rows
    out = {(str(s), str(a)): int(n) for s, a, n in rows}
    assert len(out) == len(rows), "a visitor has two numbers"
    return out


def assert_dense(found: dict[tuple[str, str], int]) -> None:
    """Per site, the numbers are 1 .. the site's visitors, each once."""
    by_site: dict[str, list[int]] = defaultdict(list)
    for (site, _), n in found.items():
        by_site[site].append(n)
    for site, ns in by_site.items():
        assert sorted(ns) == list(range(1, len(ns) + 1)), site


def bitmap_visitors(client: Client, table: str, keys: str) -> dict[tuple[Any, ...], set[str]]:
    """(site, day, *keys) -> the visitors of the row's bitmap, by their numbers."""
    rows = client.query(
        f"SELECT site_id, day, {keys}, arrayMap(x -> toUInt32(x), bitmapToArray(visitor_bitmap)) FROM {table}"
        if keys else f"SELECT site_id, day, arrayMap(x -> toUInt32(x), bitmapToArray(visitor_bitmap)) FROM {table}"
    ).result_rows
    names = {(site, n): anon for (site, anon), n in numbers(client).items()}
    return {tuple(r[:-1]): {names[(r[0], n)] for n in r[-1]} for r in rows}


def truth_by(events: list[Event], keys: tuple[str, ...]) -> dict[tuple[Any, ...], set[str]]:
    out: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for s in sessions_of(events):
        out[(s["site_id"], s["day"], *(s[k] for k in keys))].add(s["anonymous_id"])
    return dict(out)


def event_truth(events: list[Event], key: str, *, page_views: bool) -> dict[tuple[Any, ...], set[str]]:
    """Visitors per (site, session start day, path or type) of the events of each session (its start
    day and the next: sql/0121_event_rollups.sql)."""
    starts = {(s["site_id"], s["session_id"]): s["day"] for s in sessions_of(events)}
    out: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    for e in events:
        start = starts[(e.site_id, e.session_id)]
        if dt.datetime.fromtimestamp(e.ts / 1000, dt.UTC).date() > start + dt.timedelta(days=1):
            continue
        if page_views and e.type == "page_view":
            out[(e.site_id, start, e.path)].add(e.anonymous_id)
        if not page_views:
            out[(e.site_id, start, e.type)].add(e.anonymous_id)
    return dict(out)


def late_events(rng: random.Random, day: dt.date, site: str, returning: list[str]) -> list[Event]:
    """Visitors of `site` already seen and 20 new ones, a page view each on `day`: what a late import or
    a beacon retry brings."""
    return [Event(site, anon, f"{anon}-late", ms(day, rng.uniform(0, 80_000)), "page_view", "/")
            for anon in [*returning, *(f"late{i}" for i in range(20))]]


def test_every_visitor_has_one_number_dense_and_stable(store: Store) -> None:
    client = store.client
    store.insert(generate(random.Random(3), 400))
    assert fold(client) is not None
    first = numbers(client)
    humans = {(e.site_id, e.anonymous_id) for e in store.events}
    assert set(first) == humans
    assert_dense(first)

    # late events: returning visitors on another day, new ones; folded again (their days rebuilt)
    rng = random.Random(4)
    seen = sorted(a for s, a in first if s == SITES[1])[:15]
    store.insert(late_events(rng, DAY0 + dt.timedelta(days=DAYS + 2), SITES[1], seen))
    assert fold(client) is not None
    second = numbers(client)
    assert {k: second[k] for k in first} == first  # nobody renumbered
    assert set(second) == {(e.site_id, e.anonymous_id) for e in store.events}
    assert_dense(second)
    new = set(second) - set(first)
    assert len(new) == 20 and {site for site, _ in new} == {SITES[1]}
    assert min(second[k] for k in new) > max(n for (site, _), n in first.items() if site == SITES[1])


def test_each_bitmap_holds_exactly_its_rows_visitors(store: Store) -> None:
    client = store.client
    store.insert(generate(random.Random(5), 300))
    assert fold(client) is not None
    assert bitmap_visitors(client, "traffic_daily", "") == truth_by(store.events, ())
    assert bitmap_visitors(client, "channel_daily", "channel, utm_source, utm_medium, utm_campaign") == truth_by(
        store.events, ("channel", "utm_source", "utm_medium", "utm_campaign"))
    assert bitmap_visitors(client, "page_daily", "path") == event_truth(store.events, "path", page_views=True)
    assert bitmap_visitors(client, "event_type_daily", "type") == event_truth(store.events, "type",
                                                                              page_views=False)
    for table in queries.BITMAP_TABLES:  # the bitmaps and the uniqExact states count the same visitors
        rows = client.query(f"SELECT countIf(bitmapCardinality(visitor_bitmap) != finalizeAggregation(visitors)), "
                            f"count() FROM {table}").result_rows
        assert rows[0][0] == 0 and rows[0][1] > 0, table


def test_a_numbering_cut_short_is_completed_without_second_numbers(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fold killed after numbering part of the visitors (one block of its insert written) and one killed
    between the numbering and the roll-ups: the next fold numbers the rest, once each."""
    client = store.client
    store.insert(generate(random.Random(6), 300))
    # the first block of a numbering insert: some of site a's visitors, the first in anonymous_id order
    client.command("INSERT INTO visitor_numbers (site_id, anonymous_id, n) "
                   "SELECT site_id, anonymous_id, row_number() OVER (ORDER BY anonymous_id) FROM "
                   "(SELECT DISTINCT site_id, anonymous_id FROM events WHERE site_id = {s:String} "
                   "ORDER BY anonymous_id LIMIT 40)", parameters={"s": SITES[0]})
    real = fold_module.number_visitors
    calls = 0

    def killed(client_: Client, day: dt.date, sites: Collection[str] | None = None) -> None:
        nonlocal calls
        real(client_, day, sites)
        calls += 1
        if calls == 3:
            raise RuntimeError("killed between the numbering and the roll-ups")

    monkeypatch.setattr(fold_module, "number_visitors", killed)
    with pytest.raises(RuntimeError):
        fold(client)
    monkeypatch.setattr(fold_module, "number_visitors", real)
    assert fold(client) is not None
    found = numbers(client)
    assert set(found) == {(e.site_id, e.anonymous_id) for e in store.events}
    assert_dense(found)
    assert bitmap_visitors(client, "traffic_daily", "") == truth_by(store.events, ())
    assert reconcile(client).clean


def test_reconcile_finds_a_wrong_bitmap_and_repair_restores_it(store: Store) -> None:
    client = store.client
    store.insert(generate(random.Random(7), 200))
    assert fold(client) is not None
    # the same numbers added in another order: a bitmap under 32 numbers (ClickHouse's small set) lists them
    # in that order, as two builds of a day may; the same visitors, so no difference
    client.command("ALTER TABLE traffic_daily UPDATE visitor_bitmap = bitmapBuild(arrayReverse(bitmapToArray("
                   "visitor_bitmap))) WHERE 1", settings={"mutations_sync": 2})
    reordered = client.query("SELECT countIf(bitmapToArray(visitor_bitmap) != "
                             "arraySort(bitmapToArray(visitor_bitmap))) FROM traffic_daily").result_rows[0][0]
    assert reordered > 0
    assert reconcile(client).clean
    day = DAY0 + dt.timedelta(days=2)
    client.command("ALTER TABLE traffic_daily UPDATE visitor_bitmap = bitmapBuild([toUInt32(1)]) "
                   "WHERE day = {d:Date} AND site_id = {s:String}", parameters={"d": day, "s": SITES[0]},
                   settings={"mutations_sync": 2})
    report = reconcile(client)
    assert [(d.table, d.day, d.site_id) for d in report.differences] == [("traffic_daily", day, SITES[0])]
    repaired = reconcile(client, repair=True)
    assert repaired.after_repair == []
    assert reconcile(client).clean
    assert bitmap_visitors(client, "traffic_daily", "") == truth_by(store.events, ())


PANELS = ("totals", "traffic", "sources_channel", "sources_utm_source", "sources_utm_medium",
          "sources_utm_campaign", "pages_top", "events_types")


def panel_rows(client: Client, sql: str, given: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(sql, parameters=given).result_rows]


@pytest.mark.parametrize("filtered", [False, True], ids=["no_filter", "channel_filter"])
def test_panels_with_bitmaps_equal_the_panels_with_uniq_states(store: Store, filtered: bool) -> None:
    """Whole-day, partial-day and one-day ranges, after late events the fold has not seen yet (new
    visitors without a number, returning ones with one, on folded and unfolded days)."""
    client = store.client
    store.insert(generate(random.Random(8), 400))
    assert fold(client) is not None
    seen = sorted({e.anonymous_id for e in store.events if e.site_id == SITES[0]})[:25]
    store.insert(late_events(random.Random(9), DAY0 + dt.timedelta(days=4), SITES[0], seen))  # not folded
    day0 = ms(DAY0, 0)
    ranges = [(day0, day0 + DAYS * DAY_MS), (day0 + 2 * DAY_MS + 3_600_000, day0 + 6 * DAY_MS - 7_200_000),
              (day0 + 4 * DAY_MS, day0 + 5 * DAY_MS), (day0 + 3 * DAY_MS + 1, day0 + 5 * DAY_MS + 43_200_000)]
    for from_ms, to_ms in ranges:
        given: dict[str, Any] = {"site": SITES[0], "from_ms": from_ms, "to_ms": to_ms,
                                 "prev_from_ms": from_ms - (to_ms - from_ms),
                                 "bucket_s": 3600 if to_ms - from_ms <= 2 * DAY_MS else 86400}
        given.update({name: "" for name in queries.FILTERS})
        if filtered:
            given["channel"] = "direct"
        for name in PANELS:
            wanted = {p: given[p] for p in queries.parameters(queries.QUERIES_V1[name])}
            with_states = panel_rows(client, queries.QUERIES_V1[name], wanted)
            assert panel_rows(client, queries.QUERIES[name], wanted) == with_states, (name, from_ms, to_ms)
            assert with_states, name


def test_the_dashboard_reads_the_bitmaps_only_once_every_roll_up_holds_them(store: Store, tmp_path: Path) -> None:
    """Dashboard.bitmaps_live through a real query port on the store's directory: a directory never
    folded has no roll-up row (bitmaps served); after a fold every roll-up is at version 2; a roll-up
    at version 1 (an upgraded installation while the fold builds version 2) gets the uniqExact queries."""

    def live() -> bool:
        port = QueryPort(QueryPortConfig(password="bitmaps-test"), tmp_path / "clickhouse")
        port.start()
        try:
            return asyncio.run(Dashboard(port).bitmaps_live())
        finally:
            port.stop()

    client = store.client
    assert live()
    store.insert(generate(random.Random(10), 60))
    assert fold(client) is not None
    assert live()
    client.command("ALTER TABLE channel_daily MODIFY COMMENT 'roll-up definition version 1'")
    assert not live()
