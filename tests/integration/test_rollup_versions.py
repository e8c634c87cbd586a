"""Definition versions of the roll-ups (reports/versions.py): a changed definition is built from history
in the background and switched in at once. Before and during the build the views return exactly the
old numbers (never a mix of old and new days), after it exactly the new ones, equal to a recount over
the generated events; the old version is gone and reconcile is clean. An installation from before
versions (sql/0120_rollup_versions.sql) keeps its folded rows as version 1 and refolds nothing.

Real chDB per test, the real ingest path and fold (tests/integration/test_rollups.py's Store). The
definition change is what a release does: the table's SQL in reports/fold.py changes and its
declared version goes up (here with monkeypatch): the next version of `traffic_daily` (NEXT_TRAFFIC)
counts as a bounce every session with exactly one page view, engaged or not.
"""

from __future__ import annotations

import datetime as dt
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from clickstream.core import resources
from clickstream.core.clickhouse import connect, migrate
from reports import fold as fold_module
from reports import versions
from reports.fold import TABLES, fold
from reports.reconcile import format_report, reconcile
from tests.integration.test_rollups import DAY0, DAYS, SITES, Event, Store, generate, ms, sessions_of

OLD_BOUNCES = "sum(is_bounce) AS bounces"
#: The roll-ups of the release before definition versions (sql/0101_rollups.sql, sql/0103_variant_rollup.sql).
OLD_TABLES = ("session_facts", "traffic_daily", "landing_daily", "channel_daily", "variant_daily")
NEW_BOUNCES = "sum({facts}.pageviews = 1) AS bounces"
#: The definition versions the code declares (reports/fold.py VERSIONS), and the next ones the tests'
#: changed definitions of traffic_daily and session_facts declare.
DECLARED = dict(fold_module.VERSIONS)
NEXT_TRAFFIC = DECLARED["traffic_daily"] + 1
NEXT_FACTS = DECLARED["session_facts"] + 1


@pytest.fixture
def store(chdb_client: Client) -> Store:
    """The events of a test on a migrated chDB in its temp directory (conftest.chdb_client)."""
    return Store(chdb_client)


def traffic_definition_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The release that changes traffic_daily: its SQL and its declared version."""
    sql = fold_module.ROLLUP_SQL["traffic_daily"]
    assert OLD_BOUNCES in sql
    monkeypatch.setitem(fold_module.ROLLUP_SQL, "traffic_daily", sql.replace(OLD_BOUNCES, NEW_BOUNCES))
    monkeypatch.setitem(fold_module.VERSIONS, "traffic_daily", NEXT_TRAFFIC)


#: landing_daily and channel_daily at definition version 1, before visitor bitmaps and leads
#: (sql/0122_visitor_bitmaps.sql, sql/0124_rollup_leads.sql).
V1_SQL = {
    "landing_daily": """
SELECT site_id, toDate(started_at) AS day, entry_path AS landing_path, uniqExactState(anonymous_id) AS visitors,
       count() AS sessions, sum(is_engaged) AS engaged_sessions, sumMap(revenue) AS revenue
FROM {facts} WHERE toDate(started_at) = {{day:Date}} AND is_bot = 0 AND {sites} AND pageviews > 0
GROUP BY site_id, day, landing_path""",
    "channel_daily": """
SELECT site_id, toDate(started_at) AS day, channel, utm_source, utm_medium, utm_campaign,
       uniqExactState(anonymous_id) AS visitors, count() AS sessions, sum(is_engaged) AS engaged_sessions,
       sumMap(revenue) AS revenue
FROM {facts} WHERE toDate(started_at) = {{day:Date}} AND is_bot = 0 AND {sites}
GROUP BY site_id, day, channel, utm_source, utm_medium, utm_campaign""",
}


def before_bitmaps(table: str, sql: str) -> str:
    """A roll-up's SQL as it was before visitor bitmaps (sql/0122_visitor_bitmaps.sql) and leads."""
    if table in V1_SQL:
        return V1_SQL[table]
    for bitmap in (", groupBitmapState(n) AS visitor_bitmap", ",\n       groupBitmapState(n) AS visitor_bitmap",
                   " LEFT JOIN {numbers} USING (site_id, anonymous_id)"):
        sql = sql.replace(bitmap, "")
    return sql


def read_traffic(client: Client) -> dict[Any, tuple[Any, ...]]:
    """What a dashboard reads of traffic: every site's days (v_daily_traffic) and whole range
    (v_traffic_range); bounces as bounce_rate x sessions."""
    out: dict[Any, tuple[Any, ...]] = {}
    for site, day, visitors, sessions, pageviews, rate in client.query(
            "SELECT site_id, day, visitors, sessions, pageviews, bounce_rate FROM v_daily_traffic").result_rows:
        out[(site, day)] = (visitors, sessions, pageviews, round(rate * sessions))
    for site in SITES:
        for visitors, sessions, pageviews, rate in client.query(
                "SELECT visitors, sessions, pageviews, bounce_rate FROM v_traffic_range(site = {s:String}, "
                "from = {f:Date}, to = {t:Date})",
                parameters={"s": site, "f": DAY0 - dt.timedelta(days=1), "t": DAY0 + dt.timedelta(days=DAYS + 1)}
        ).result_rows:
            out[site] = (visitors, sessions, pageviews, round(rate * sessions))
    return out


def expected_traffic(events: list[Event], version: int) -> dict[Any, tuple[Any, ...]]:
    """The same numbers from the events alone; a bounce per definition `version` of the bounce (1: the
    code's, 2: the tests' changed one, NEW_BOUNCES)."""
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for s in sessions_of(events):
        groups[(s["site_id"], s["day"])].append(s)
        groups[s["site_id"]].append(s)

    def bounce(s: dict[str, Any]) -> int:
        return int(s["is_bounce"]) if version == 1 else int(s["pageviews"] == 1)

    return {k: (len({s["anonymous_id"] for s in v}), len(v), sum(s["pageviews"] for s in v), sum(map(bounce, v)))
            for k, v in groups.items()}


def table_state(client: Client) -> tuple[dict[str, int | None], set[str]]:
    """(versions the roll-ups hold, names of the twins that exist)."""
    twins = {str(n) for (n,) in client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'fold\\_next\\_%'"
    ).result_rows}
    return versions.stored_versions(client, TABLES), twins


def test_a_definition_change_is_built_in_the_background_and_switched_in_whole(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    client = store.client
    store.insert(generate(random.Random(17), 500))
    assert fold(client) is not None
    old = read_traffic(client)
    assert old == expected_traffic(store.events, 1)
    assert expected_traffic(store.events, 2) != old  # the change is visible in the numbers
    assert table_state(client) == (DECLARED, set())

    traffic_definition_v2(monkeypatch)
    # (a) the release is deployed, nothing built yet: the old numbers
    assert read_traffic(client) == old
    runs = []
    covered: set[dt.date] = set()
    while True:
        run = fold(client, backfill_days=3)
        assert run is not None
        runs.append(run)
        if run.switched:
            break
        # (b) half-way through the days: exactly the old numbers, the new version only in the twin
        assert read_traffic(client) == old, f"run {len(runs)}"
        stored, twins = table_state(client)
        assert stored["traffic_daily"] == DECLARED["traffic_daily"] and twins == {"fold_next_traffic_daily"}
        assert versions.stored_versions(client, ["fold_next_traffic_daily"]) == {
            "fold_next_traffic_daily": NEXT_TRAFFIC}
        if len(runs) == 2:
            # late events meanwhile, on a day already built into the twin and on one not yet: their days
            # go into the twin; the other roll-ups stay live
            built = min(run.backfilled)
            late = [Event(SITES[2], "late-1", "late-1-s", ms(built, 50), "page_view", "/late"),
                    Event(SITES[2], "late-1", "late-1-s", ms(built, 51), "click", "/late"),
                    Event(SITES[2], "late-2", "late-2-s", ms(DAY0 + dt.timedelta(days=DAYS - 1), 70),
                          "page_view", "/late")]
            store.insert(late)
            late_run = fold(client, backfill_days=0)
            assert late_run is not None and built in late_run.days and late_run.backfilled == ()
            covered |= set(late_run.days)
            assert read_traffic(client) == old
            landing = client.query("SELECT sessions FROM v_landing_pages_range(site = {s:String}, from = {d:Date}, "
                                   "to = {d:Date}) WHERE landing_path = '/late'",
                                   parameters={"s": SITES[2], "d": built}).result_rows
            assert landing == [(1,)]
    assert len(runs) >= 4 and runs[-1].switched == ("traffic_daily",)
    covered |= {d for r in runs for d in r.backfilled}
    assert covered >= versions.history_days(client) and len(covered) >= DAYS
    # (c) switched: exactly the new numbers, equal to a recount of every event, the late ones included
    assert read_traffic(client) == expected_traffic(store.events, 2)
    # (d) the old version is gone: no twin, the table holds version 2 (and only rows built with it:
    # every day equals the new recount above)
    assert table_state(client) == ({**DECLARED, "traffic_daily": NEXT_TRAFFIC}, set())
    # (e) reconcile compares the live (new) version: clean, nothing pending
    report = reconcile(client)
    assert report.clean and report.pending == [], format_report(report)
    again = fold(client)
    assert again is not None and again.days == () and again.backfilled == () and again.switched == ()


def test_reconcile_reports_a_pending_version_and_repair_builds_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    client = store.client
    store.insert(generate(random.Random(5), 300))
    assert fold(client) is not None
    old = read_traffic(client)
    traffic_definition_v2(monkeypatch)
    n_days = len(versions.history_days(client))

    report = reconcile(client)
    assert report.clean, format_report(report)  # the other tables are compared; traffic_daily is not
    assert [(p.table, p.stored, p.declared, p.days_built, p.days_total) for p in report.pending] == [
        ("traffic_daily", DECLARED["traffic_daily"], NEXT_TRAFFIC, 0, n_days)]
    assert (f"PENDING traffic_daily: live version {DECLARED['traffic_daily']}, declared {NEXT_TRAFFIC}: "
            "building (0 of") in format_report(report)
    assert table_state(client)[1] == set()  # a reconcile without --repair creates nothing

    assert fold(client, backfill_days=2) is not None
    report = reconcile(client)
    assert [(p.table, p.days_built) for p in report.pending] == [("traffic_daily", 2)]
    assert read_traffic(client) == old

    report = reconcile(client, repair=True)
    assert report.switched == ["traffic_daily"] and report.clean and report.pending == [], format_report(report)
    assert read_traffic(client) == expected_traffic(store.events, 2)
    assert table_state(client) == ({**DECLARED, "traffic_daily": NEXT_TRAFFIC}, set())
    report = reconcile(client)
    assert report.clean and report.pending == []


def old_dirty_parts(client: Client) -> dict[str, list[tuple[dt.date, str]]]:
    """fold_dirty_days' marks as the schema before sql/0123_fold_site_marks.sql has them: days only (every site)."""
    rows = client.query("SELECT _part, groupUniqArray(day) FROM fold_dirty_days GROUP BY _part").result_rows
    return {str(part): [(day, fold_module.ALL_SITES) for day in days] for part, days in rows}


def test_an_existing_installation_keeps_its_rows_as_version_1_and_refolds_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = tmp_path / "sql-before"
    before.mkdir()
    for f in resources.migrations().iterdir():
        if f.name.endswith(".sql") and f.name < "0120":
            shutil.copyfile(str(f), before / f.name)
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client, sql_dir=before)
        store = Store(client)
        store.insert(generate(random.Random(9), 300))
        # the fold of the release before versions: the roll-ups it had (not the event roll-ups of 0121)
        monkeypatch.setattr(fold_module, "TABLES", OLD_TABLES)
        monkeypatch.setattr(fold_module, "ROLLUP_SQL",
                            {t: before_bitmaps(t, sql) for t, sql in fold_module.ROLLUP_SQL.items() if t in OLD_TABLES})
        monkeypatch.setattr(fold_module, "ROLLUP_COLUMNS",
                            {t: c.replace(", visitor_bitmap", "").replace(", leads", "")
                             for t, c in fold_module.ROLLUP_COLUMNS.items()})
        monkeypatch.setattr(fold_module, "number_visitors", lambda client_, day, sites=None: None)
        monkeypatch.setattr(fold_module, "dirty_parts", old_dirty_parts)  # marks without a site (before 0123)
        assert fold(client) is not None
        monkeypatch.undo()
        for table in OLD_TABLES:  # as the fold before versions left them: no version on the tables
            client.command(f"ALTER TABLE {table} MODIFY COMMENT ''")
        assert set(versions.stored_versions(client, OLD_TABLES).values()) == {None}
        parts_query = ("SELECT table, groupArraySorted(1000)(name) FROM system.parts "
                       "WHERE database = currentDatabase() AND active AND table IN {t:Array(String)} GROUP BY table")
        parts = client.query(parts_query, parameters={"t": list(OLD_TABLES)}).result_rows
        traffic = read_traffic(client)

        applied = migrate(client)
        assert "0120_rollup_versions" in applied and "0121_event_rollups" in applied
        assert table_state(client) == ({t: 1 if t in OLD_TABLES else None for t in TABLES}, set())
        # the next run builds the roll-ups added after 0120 from all of history, in one run (they have no
        # older numbers to serve meanwhile), and those whose definition changed since (version 2 of
        # traffic_daily and channel_daily: visitor bitmaps, sql/0122_visitor_bitmaps.sql) in the same run,
        # and leaves the other folded ones as they are
        run = fold(client)
        added = tuple(t for t in TABLES if t not in OLD_TABLES or DECLARED[t] > 1)
        kept = [t for t in OLD_TABLES if DECLARED[t] == 1]
        assert run is not None and run.days == () and run.switched == added and len(run.backfilled) >= DAYS
        assert client.query(parts_query, parameters={"t": kept}).result_rows == [
            row for row in parts if row[0] in kept]  # not rebuilt
        assert table_state(client) == (DECLARED, set())
        assert read_traffic(client) == traffic == expected_traffic(store.events, 1)
        assert reconcile(client).clean
        run = fold(client)
        assert run is not None and run.days == () and run.backfilled == () and run.switched == ()

        # without the migration's version, a roll-up on an installation the fold ran on is built from
        # history (as a roll-up added later is): here with the same definition, so the same numbers
        client.command("ALTER TABLE traffic_daily MODIFY COMMENT ''")
        run = fold(client, backfill_days=None)
        assert run is not None and run.switched == ("traffic_daily",) and len(run.backfilled) >= DAYS
        assert table_state(client) == (DECLARED, set())
        assert read_traffic(client) == traffic
    finally:
        client.close()


def test_a_new_session_facts_version_rebuilds_the_roll_ups_built_from_it(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """session_facts' is_bounce changes (version 2): traffic_daily, landing_daily, channel_daily and the
    event roll-ups are built from the facts, so they are built again with them (their version stays 1),
    variant_daily is not; the views read the old facts and roll-ups until all of them switch."""
    client = store.client
    store.insert(generate(random.Random(23), 300))
    assert fold(client) is not None
    old = read_traffic(client)
    old_bounces = client.query("SELECT sum(is_bounce) FROM v_sessions").result_rows
    bounce = "toUInt8(pageviews = 1 AND NOT is_engaged) AS is_bounce"
    assert bounce in fold_module.FACTS_SQL
    monkeypatch.setattr(fold_module, "FACTS_SQL",
                        fold_module.FACTS_SQL.replace(bounce, "toUInt8(pageviews = 1) AS is_bounce"))
    monkeypatch.setitem(fold_module.VERSIONS, "session_facts", NEXT_FACTS)

    run = fold(client, backfill_days=4)
    assert run is not None and run.switched == ()
    built_from_facts = tuple(t for t in TABLES if "{facts}" in fold_module.ROLLUP_SQL.get(t, ""))
    assert {"traffic_daily", "landing_daily", "channel_daily"} <= set(built_from_facts)
    assert "variant_daily" not in built_from_facts
    assert table_state(client)[1] == {f"fold_next_{t}" for t in ("session_facts", *built_from_facts)}
    assert read_traffic(client) == old
    assert client.query("SELECT sum(is_bounce) FROM v_sessions").result_rows == old_bounces
    while not run.switched:
        run = fold(client, backfill_days=4)
        assert run is not None
        if not run.switched:
            assert read_traffic(client) == old
    assert run.switched == ("session_facts", *built_from_facts)
    assert read_traffic(client) == expected_traffic(store.events, 2)
    assert client.query("SELECT sum(is_bounce) FROM v_sessions").result_rows == [
        (sum(s["pageviews"] == 1 for s in sessions_of(store.events)),)]
    assert table_state(client) == ({**DECLARED, "session_facts": NEXT_FACTS}, set())
    report = reconcile(client)
    assert report.clean and report.pending == [], format_report(report)


def test_a_test_migration_adds_a_column_to_a_new_definition(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A definition change with a new column: the test migration adds `single_page_sessions` to
    traffic_daily (DEFAULT 0: the old version's rows), version 2 fills it. Until the switch the old rows
    read 0 and the old numbers; after it the new column equals a recount, the rest is unchanged."""
    client = store.client
    store.insert(generate(random.Random(31), 300))
    assert fold(client) is not None  # the staging tables now exist with the old columns
    old = read_traffic(client)
    sql_dir = tmp_path / "sql"
    sql_dir.mkdir()
    for f in resources.migrations().iterdir():
        if f.name.endswith(".sql"):
            shutil.copyfile(str(f), sql_dir / f.name)
    (sql_dir / "0999_test_single_page_sessions.sql").write_text(
        "ALTER TABLE traffic_daily ADD COLUMN IF NOT EXISTS single_page_sessions UInt64 DEFAULT 0;\n")
    assert migrate(client, sql_dir=sql_dir) == ["0999_test_single_page_sessions"]
    sql = fold_module.ROLLUP_SQL["traffic_daily"]
    last = "groupBitmapState(n) AS visitor_bitmap"  # the new column last, as in ROLLUP_COLUMNS
    assert last in sql
    monkeypatch.setitem(fold_module.ROLLUP_SQL, "traffic_daily",
                        sql.replace(last, last + ", countIf({facts}.pageviews = 1) AS single_page_sessions"))
    monkeypatch.setitem(fold_module.ROLLUP_COLUMNS, "traffic_daily",
                        fold_module.ROLLUP_COLUMNS["traffic_daily"] + ", single_page_sessions")
    monkeypatch.setitem(fold_module.VERSIONS, "traffic_daily", NEXT_TRAFFIC)
    single = "SELECT site_id, day, single_page_sessions FROM traffic_daily WHERE single_page_sessions > 0"
    run = fold(client, backfill_days=3)
    assert run is not None and run.switched == ()
    assert client.query(single).result_rows == [] and read_traffic(client) == old
    while not run.switched:
        run = fold(client, backfill_days=3)
        assert run is not None
    want: dict[tuple[str, dt.date], int] = defaultdict(int)
    for s in sessions_of(store.events):
        want[(s["site_id"], s["day"])] += s["pageviews"] == 1
    assert {(r[0], r[1]): r[2] for r in client.query(single).result_rows} == {k: v for k, v in want.items() if v}
    assert read_traffic(client) == old == expected_traffic(store.events, 1)
    assert table_state(client) == ({**DECLARED, "traffic_daily": NEXT_TRAFFIC}, set())
    assert reconcile(client).clean


def test_every_table_of_the_fold_declares_its_definition_version() -> None:
    """A roll-up added to reports/fold.py TABLES needs its entry in VERSIONS (1 for a new table)."""
    assert set(fold_module.VERSIONS) == set(TABLES)
    assert all(isinstance(v, int) and v >= 1 for v in fold_module.VERSIONS.values())


def test_the_fold_component_of_serve_builds_a_new_version_in_the_background(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve / the flusher run the fold as a component (Folder): started on a directory whose
    traffic_daily is at its version while the code declares the next, it returns at once and builds that
    run by run in its thread (BACKFILL_DAYS_PER_RUN days each) until it switches."""
    client = store.client
    store.insert(generate(random.Random(41), 200))
    assert fold(client) is not None
    traffic_definition_v2(monkeypatch)
    folder = fold_module.Folder(client, interval_s=0.05)
    folder.start()
    try:
        deadline = time.monotonic() + 120
        while table_state(client)[0]["traffic_daily"] != NEXT_TRAFFIC and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        folder.stop()
    assert folder.failures == 0
    assert table_state(client) == ({**DECLARED, "traffic_daily": NEXT_TRAFFIC}, set())
    assert read_traffic(client) == expected_traffic(store.events, 2)


def test_a_crash_between_exchange_and_drop_leaves_no_old_rows(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """session_facts at its next version rebuilds channel_daily at the same version; the fold dies right
    after exchanging channel_daily (its old version, same comment, left in the twin). The next fold must not take
    that twin for its build: a row of the old version on a day without events must not come back."""
    client = store.client
    store.insert(generate(random.Random(43), 200))
    assert fold(client) is not None
    client.command("INSERT INTO channel_daily (site_id, day, channel, visitors, sessions) "
                   "SELECT 'a.example', toDate('2020-01-01'), 'direct', uniqExactState('old'), 1")
    bounce = "toUInt8(pageviews = 1 AND NOT is_engaged) AS is_bounce"
    monkeypatch.setattr(fold_module, "FACTS_SQL",
                        fold_module.FACTS_SQL.replace(bounce, "toUInt8(pageviews = 1) AS is_bounce"))
    monkeypatch.setitem(fold_module.VERSIONS, "session_facts", NEXT_FACTS)
    real_switch = versions.switch

    def crash(client_: Client, build: versions.Build) -> None:
        if build.table != "channel_daily":  # the event roll-ups after it in TABLES switch first
            real_switch(client_, build)
            return
        client_.command(f"EXCHANGE TABLES {build.table} AND {build.twin}")
        raise RuntimeError("killed between exchange and drop")

    monkeypatch.setattr(versions, "switch", crash)
    with pytest.raises(RuntimeError):
        fold(client, backfill_days=None)
    monkeypatch.setattr(versions, "switch", real_switch)
    assert client.query("SELECT count() FROM fold_next_channel_daily WHERE day = '2020-01-01'").result_rows == [(1,)]
    run = fold(client, backfill_days=None)
    # session_facts is still pending, so every roll-up built from it is built and switched again with it
    built_from_facts = tuple(t for t in TABLES if "{facts}" in fold_module.ROLLUP_SQL.get(t, ""))
    assert run is not None and run.switched == ("session_facts", *built_from_facts)
    assert client.query("SELECT count() FROM channel_daily WHERE day = '2020-01-01'").result_rows == [(0,)]
    assert table_state(client) == ({**DECLARED, "session_facts": NEXT_FACTS}, set())
    assert read_traffic(client) == expected_traffic(store.events, 2)
    report = reconcile(client)
    assert report.clean and report.pending == [], format_report(report)
