"""A day marked by one site's events is rebuilt for that site alone (sql/0123_fold_site_marks.sql,
reports/fold.py `build_day`): that site's rows equal a full recount and the independent computation of
tests/integration/test_rollups.py, and the other sites' rows of the day are the ones stored before. A
row planted for another site shows it: it survives the fold, where a rebuild of every site removes it.
A mark written before 0123 (site_id '') rebuilds the day for every site. `merges_paused` (a fold pauses
the merges of its marks tables, MARK_TABLES) stops the merges of the tables named, not the fold's own
mutations, and a fold in the block drops exactly the marks it read.

Real chDB (a temp directory), the real ingest path and the real fold.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from clickstream.core.clickhouse import connect, migrate
from reports.fold import MARK_TABLES, fold, merges_paused
from reports.reconcile import Difference, reconcile
from tests.integration.test_rollups import DAY0, SITES, Event, Store, check_views, generate, ms

DAY = DAY0 + dt.timedelta(days=5)
SITE, OTHER = SITES[0], SITES[1]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client)
        store = Store(client)
        store.insert(generate(random.Random(5), 240))
        assert fold(client) is not None
        yield store
    finally:
        client.close()


def plant(client: Client) -> None:
    """A row of OTHER on DAY in event_prop_daily that no recount gives (check_views does not read it)."""
    client.command("INSERT INTO event_prop_daily (site_id, day, type, key, value, events, visitors) "
                   "SELECT {s:String}, {d:Date}, 'planted', 'k', 'v', 7, uniqExactState('x')",
                   parameters={"s": OTHER, "d": DAY}, settings={"async_insert": 0})


def planted(client: Client) -> int:
    return int(client.query("SELECT count() FROM event_prop_daily WHERE site_id = {s:String} AND day = {d:Date} "
                            "AND type = 'planted'", parameters={"s": OTHER, "d": DAY}).result_rows[0][0])


def marks(client: Client) -> set[tuple[str, dt.date]]:
    return {(str(s), d) for s, d in client.query("SELECT DISTINCT site_id, day FROM fold_dirty_days").result_rows}


def late_events(store: Store) -> list[Event]:
    """SITE only: a new session on DAY with a campaign, and a click in a session of SITE started on DAY."""
    started = sorted((e for e in store.events if e.site_id == SITE and dt.datetime.fromtimestamp(e.ts / 1000, dt.UTC)
                      .date() == DAY), key=lambda e: e.ts)
    assert started, "the generated events have a session of SITE on DAY"
    joined = started[0]
    return [
        Event(SITE, "late-visitor", "late-s", ms(DAY, 40_000), "page_view", "/pricing",
              "?utm_source=newsletter&utm_medium=email"),
        Event(SITE, "late-visitor", "late-s", ms(DAY, 40_030), "click", "/pricing"),
        Event(SITE, joined.anonymous_id, joined.session_id, joined.ts + 1000, "click", "/features"),
    ]


def test_a_day_marked_by_one_site_is_rebuilt_for_that_site_alone(store: Store) -> None:
    client = store.client
    plant(client)
    store.insert(late_events(store))
    assert marks(client) == {(SITE, DAY), (SITE, DAY - dt.timedelta(days=1))}

    run = fold(client)
    assert run is not None and run.days == (DAY - dt.timedelta(days=1), DAY)
    assert marks(client) == set()
    assert planted(client) == 1  # OTHER's rows of the day were kept, not recomputed
    check_views(store)  # every site's sessions and roll-ups, the late events included, equal the computation
    assert reconcile(client, site=SITE).clean
    assert reconcile(client, site=SITES[2]).clean
    found = reconcile(client, first=DAY - dt.timedelta(days=1), last=DAY).differences
    assert found == [Difference("event_prop_daily", DAY, OTHER, 1, 0)]


def test_a_mark_without_a_site_rebuilds_the_day_for_every_site(store: Store) -> None:
    client = store.client
    plant(client)
    client.command("INSERT INTO fold_dirty_days (day, marked_at) SELECT {d:Date}, now64(6, 'UTC')",
                   parameters={"d": DAY}, settings={"async_insert": 0})
    assert marks(client) == {("", DAY)}

    run = fold(client)
    assert run is not None and run.days == (DAY,)
    assert planted(client) == 0
    assert reconcile(client).clean
    check_views(store)


def test_merges_paused_stops_the_tables_merges_and_a_fold_runs_in_the_block(store: Store) -> None:
    client = store.client

    def active_parts(table: str) -> int:
        return int(client.query("SELECT count() FROM system.parts WHERE database = currentDatabase() AND active "
                                "AND table = {t:String}", parameters={"t": table}).result_rows[0][0])

    with merges_paused(client, ("events", *MARK_TABLES)):
        late = late_events(store)
        store.insert(late[:2])  # two more parts of events and of the marks, which cannot merge now
        store.insert(late[2:])
        for table in ("events", "fold_dirty_days"):
            assert active_parts(table) > 1
            with pytest.raises(DatabaseError, match="Cancelled merging parts"):
                client.command(f"OPTIMIZE TABLE {table} FINAL")
    with merges_paused(client, ("events",)):
        run = fold(client)  # its lightweight DELETEs (mutations of the staging tables) still run
        assert run is not None and run.days == (DAY - dt.timedelta(days=1), DAY)
        assert marks(client) == set()  # it dropped every part it read
    client.command("OPTIMIZE TABLE events FINAL")  # merging again
    assert active_parts("events") == 1  # one partition (a month) in this test's events
    assert reconcile(client).clean
    check_views(store)
