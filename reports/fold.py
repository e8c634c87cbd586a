"""The fold: rebuild whole days of the roll-ups (sql/0101_rollups.sql) from `events`, atomically.

What a day is: the UTC day a session started. Rebuilding day D:
1. `session_facts` of D: the events of D - 1 .. D + 1 grouped by session, the sessions whose first
   event is on D (FACTS_SQL; order of events (ts, seq, spool_segment, spool_offset), sql/README.md);
2. `traffic_daily`, `landing_daily`, `channel_daily` of D from those facts, and `variant_daily` of D
   (visitors first exposed in an experiment on D, from variant_exposures and conversions), and
   `page_daily`, `event_type_daily`, `event_prop_daily` of D (the events of D and D + 1 of the human
   sessions started on D, from `events` and those facts: sql/0121_event_rollups.sql) (ROLLUP_SQL);
3. each built in a staging table (`fold_staging_<table>`, same structure) and swapped in with
   `ALTER TABLE <table> REPLACE PARTITION ID '<YYYYMMDD>' FROM fold_staging_<table>`: a reader sees the
   day before or after the rebuild, never half of it (per table).

The same SQL is the recount `clickstream reconcile` compares with (reports/reconcile.py), so a
folded day equals a recount by construction; late events, imports, retries and crashes only make
days dirty again. Which days: the marks `fold_dirty_days_mv` writes for every insert into `events`
(the site and the day of each event and the day before; a day is rebuilt for the sites that marked it,
`build_day`), and for `variant_daily` the marks `fold_dirty_visitors_mv`
writes for every lead (the first-exposure days of its visitor, `lead_days`) and the later exposure days
of visitors an earlier exposure moved (`moved_days`); a run rebuilds the days of the parts it read and
then drops exactly those parts.

Definition versions (reports/versions.py): each table's SQL has a version in VERSIONS, recorded on the
table; while a table holds another version than the declared one, its days go into a twin
(`fold_next_<table>`) that each run extends by a few days of history, and the twin is exchanged in
whole when complete: the views read one version, never a mix.

One fold at a time: a lock in the process and `FoldLease` (a claim row in `fold_lease`, the earliest
live claim wins) across processes on one ClickHouse server; a fold killed mid-run holds the others
off until its claim expires (LEASE_S). With the embedded engine only one process opens the directory,
so the process lock is enough and no claim is made (nor a dead one waited for). A ClickHouse cluster
is not folded here (the roll-ups would need a fold per shard on the local tables): `serve`/`flusher`
on a cluster log that and leave them alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from starlette.routing import BaseRoute

from clickstream.core.clickhouse import is_embedded
from clickstream.core.component import Check
from reports import versions, views

log = logging.getLogger(__name__)

#: The one order of events (sql/README.md "Order of events").
ORDER_KEY = "(ts, seq, spool_segment, spool_offset)"

#: Tables the fold rebuilds, in the order they are swapped in (facts first: a roll-up is never newer).
TABLES = ("session_facts", "traffic_daily", "landing_daily", "channel_daily", "variant_daily", "page_daily",
          "event_type_daily", "event_prop_daily")
#: The definition version of each table of TABLES (its SQL below). Change a table's SQL so that its numbers
#: change, and raise its version: the fold then builds the new version from history in the background
#: while the views read the old one, and switches them at once when it is complete (reports/versions.py).
#: The roll-ups built from session_facts (`{facts}` in ROLLUP_SQL) are rebuilt with it when FACTS_SQL's
#: version goes up (their own version stays). A table missing here is at version 1.
#: Version 2 of traffic_daily, channel_daily, page_daily and event_type_daily adds `visitor_bitmap`, the
#: visitors as a Roaring bitmap of their numbers (sql/0122_visitor_bitmaps.sql), and so does version 2 of
#: landing_daily, which also adds `leads` (the leads of the day by their landing path), as version 3 of
#: channel_daily does (by their last touch; sql/0124_rollup_leads.sql); the other columns are those of
#: version 1. The dashboard views read these columns once a roll-up holds them (reports/views.py, after
#: every run).
VERSIONS: dict[str, int] = {"session_facts": 1, "traffic_daily": 2, "landing_daily": 2, "channel_daily": 3,
                            "variant_daily": 1, "page_daily": 2, "event_type_daily": 2, "event_prop_daily": 1}
STAGING_PREFIX = "fold_staging_"
#: The numbers of the visitors of the day being built (a copy of visitor_numbers' rows for them).
DAY_NUMBERS = STAGING_PREFIX + "visitor_numbers"
#: Settings of the fold's inserts: synchronous, and never deduplicated (a rebuilt day may be identical
#: to the one built before; dropping it as a duplicate would swap in an empty day).
FOLD_SETTINGS: dict[str, Any] = {"async_insert": 0, "insert_deduplicate": 0}
LEASE_S = 600.0
#: A claim must still be the winner this long after it was made (an insert of another claimant that was
#: in flight when it first looked is visible by then).
LEASE_SETTLE_S = 0.3

FACTS_COLUMNS = ("site_id, session_id, anonymous_id, started_at, ended_at, pageviews, events, entry_path, exit_path, "
                 "utm_source, utm_medium, utm_campaign, utm_term, utm_content, referrer_host, channel, variants, "
                 "is_bot, engaged_ms, max_scroll_depth, passive_events, revenue, is_engaged, is_bounce")

#: The sites a build covers: every site when {all_sites:Bool} is true, else those in {sites:Array(String)}
#: (a day rebuilt for the sites whose events marked it, `build_day`). The parameters are literals when
#: the query is analysed, so the primary key's site_id applies (checked with EXPLAIN indexes = 1).
SITES = "({all_sites:Bool} OR site_id IN {sites:Array(String)})"


def site_params(sites: Collection[str] | None) -> dict[str, Any]:
    """The parameters of SITES for `sites` (None: every site)."""
    return {"all_sites": sites is None, "sites": sorted(sites or ())}

#: One final row per session started on {day:Date}; its events are those of that day and the next.
FACTS_SQL = f"""
SELECT
    site_id, session_id, anonymous_id, started_at, ended_at, pageviews, events, entry_path, exit_path,
    touch.1 AS utm_source, touch.2 AS utm_medium, touch.3 AS utm_campaign, touch.4 AS utm_term,
    touch.5 AS utm_content, touch.6 AS referrer_host, touch.7 AS channel, variants, is_bot, engaged_ms,
    max_scroll_depth, passive_events, revenue,
    toUInt8(pageviews >= 2 OR events - pageviews > passive_events OR engaged_ms > 10000) AS is_engaged,
    toUInt8(pageviews = 1 AND NOT is_engaged) AS is_bounce
FROM
(
    SELECT
        site_id,
        session_id,
        argMin(anonymous_id, {ORDER_KEY}) AS anonymous_id,
        min(ts) AS started_at,
        max(ts) AS ended_at,
        countIf(type = 'page_view') AS pageviews,
        count() AS events,
        argMinIf(path, {ORDER_KEY}, type = 'page_view') AS entry_path,
        argMaxIf(path, {ORDER_KEY}, type = 'page_view') AS exit_path,
        argMin((utm_source, utm_medium, utm_campaign, utm_term, utm_content, referrer_host, channel),
               {ORDER_KEY}) AS touch,
        arraySort(groupUniqArrayArray(arrayZip(mapKeys(variants), mapValues(variants)))) AS variants,
        max(is_bot) AS is_bot,
        sumIf(least(toUInt64OrZero(props['engaged_ms']), 86400000), type = 'engagement') AS engaged_ms,
        maxIf(toUInt8(least(toUInt64OrZero(props['scroll_depth']), 100)), type = 'engagement') AS max_scroll_depth,
        countIf(type IN ('engagement', 'web_vitals', 'not_found')) AS passive_events,
        sumMapIf(map(upper(props['currency']), assumeNotNull(toDecimal128OrNull(props['revenue'], 6))),
                 toDecimal128OrNull(props['revenue'], 6) IS NOT NULL) AS revenue
    FROM events
    WHERE toDate(ts) >= {{day:Date}} - 1 AND toDate(ts) <= {{day:Date}} + 1 AND {SITES}
    GROUP BY site_id, session_id
    HAVING toDate(started_at) = {{day:Date}}
)
"""

#: The events of the roll-ups of sql/0121_event_rollups.sql for {day:Date}: human events of that day and
#: the next whose session (site_id, session_id) is a human session started on the day in `{facts}`.
_DAY_EVENTS = ("toDate(ts) >= {{day:Date}} AND toDate(ts) <= {{day:Date}} + 1 AND is_bot = 0 AND {sites} "
               "AND (site_id, session_id) IN (SELECT site_id, session_id FROM {facts} "
               "WHERE toDate(started_at) = {{day:Date}} AND is_bot = 0 AND {sites})")

#: The visitors a roll-up of {day:Date} can hold: those of the human events of that day and the next
#: (a session started on the day has its events there; the event roll-ups count the event's own visitor).
_DAY_VISITORS = ("SELECT DISTINCT site_id, anonymous_id FROM events "
                 f"WHERE toDate(ts) >= {{day:Date}} AND toDate(ts) <= {{day:Date}} + 1 AND is_bot = 0 AND {SITES}")
#: Number the day's visitors that have no number yet (sql/0122_visitor_bitmaps.sql): per site, above the
#: site's largest number, in anonymous_id order. Only the fold runs it (its lease): one writer, and a rerun
#: after a half-done insert numbers only the rest.
NUMBER_SQL = f"""
INSERT INTO visitor_numbers (site_id, anonymous_id, n)
SELECT c.site_id, c.anonymous_id,
       toUInt32(b.base + row_number() OVER (PARTITION BY c.site_id ORDER BY c.anonymous_id)) AS n
FROM ({_DAY_VISITORS}
      AND (site_id, anonymous_id) NOT IN (SELECT site_id, anonymous_id FROM visitor_numbers
                                          WHERE (site_id, anonymous_id) IN ({_DAY_VISITORS}))) AS c
LEFT JOIN (SELECT site_id, max(n) AS base FROM visitor_numbers GROUP BY site_id) AS b ON c.site_id = b.site_id"""
#: The numbers of the day's visitors, into DAY_NUMBERS: what the roll-ups join (`{numbers}` in ROLLUP_SQL).
DAY_NUMBERS_SQL = (f"INSERT INTO {DAY_NUMBERS} (site_id, anonymous_id, n) SELECT site_id, anonymous_id, n "
                   f"FROM visitor_numbers WHERE (site_id, anonymous_id) IN ({_DAY_VISITORS})")

#: Each roll-up of one day from a table of session facts (`{facts}`: session_facts or its staging twin).
ROLLUP_SQL: dict[str, str] = {
    "traffic_daily": """
SELECT site_id, toDate(started_at) AS day, uniqExactState(anonymous_id) AS visitors, count() AS sessions,
       sum(pageviews) AS pageviews, sum(is_bounce) AS bounces,
       sum(toUInt64(toUnixTimestamp64Milli(ended_at) - toUnixTimestamp64Milli(started_at))) AS duration_ms,
       sum(is_engaged) AS engaged_sessions, sum(engaged_ms) AS engaged_ms, groupBitmapState(n) AS visitor_bitmap
FROM {facts} LEFT JOIN {numbers} USING (site_id, anonymous_id)
WHERE toDate(started_at) = {{day:Date}} AND is_bot = 0 AND {sites}
GROUP BY site_id, day""",
    # Sessions by entry path, and (rows with sessions = 0 when no session of the day has it) the leads
    # that occurred on the day by their frozen landing_path (sql/0124_rollup_leads.sql).
    "landing_daily": """
SELECT site_id, day, landing_path, uniqExactStateIf(anonymous_id, is_session) AS visitors,
       countIf(is_session) AS sessions, sumIf(is_engaged, is_session) AS engaged_sessions,
       sumMapIf(revenue, is_session) AS revenue, groupBitmapStateIf(n, is_session) AS visitor_bitmap,
       uniqExactStateIf(lead_id, NOT is_session) AS leads
FROM
(
    SELECT site_id, toDate(started_at) AS day, entry_path AS landing_path, anonymous_id, is_engaged, revenue, n,
           '' AS lead_id, true AS is_session
    FROM {facts} LEFT JOIN {numbers} USING (site_id, anonymous_id)
    WHERE toDate(started_at) = {{day:Date}} AND is_bot = 0 AND {sites} AND pageviews > 0
    UNION ALL
    SELECT site_id, toDate(occurred_at), landing_path, '', 0, map(), 0, lead_id, false
    FROM lead_events WHERE toDate(occurred_at) = {{day:Date}} AND {sites}
)
GROUP BY site_id, day, landing_path""",
    # Sessions by first touch, and the leads that occurred on the day by their frozen last touch (as
    # v_channels has always counted them; sql/0124_rollup_leads.sql).
    "channel_daily": """
SELECT site_id, day, channel, utm_source, utm_medium, utm_campaign,
       uniqExactStateIf(anonymous_id, is_session) AS visitors, countIf(is_session) AS sessions,
       sumIf(is_engaged, is_session) AS engaged_sessions, sumMapIf(revenue, is_session) AS revenue,
       groupBitmapStateIf(n, is_session) AS visitor_bitmap, uniqExactStateIf(lead_id, NOT is_session) AS leads
FROM
(
    SELECT site_id, toDate(started_at) AS day, channel, utm_source, utm_medium, utm_campaign, anonymous_id,
           is_engaged, revenue, n, '' AS lead_id, true AS is_session
    FROM {facts} LEFT JOIN {numbers} USING (site_id, anonymous_id)
    WHERE toDate(started_at) = {{day:Date}} AND is_bot = 0 AND {sites}
    UNION ALL
    SELECT site_id, toDate(occurred_at), last_touch.channel, last_touch.utm_source, last_touch.utm_medium,
           last_touch.utm_campaign, '', 0, map(), 0, lead_id, false
    FROM lead_events WHERE toDate(occurred_at) = {{day:Date}} AND {sites}
)
GROUP BY site_id, day, channel, utm_source, utm_medium, utm_campaign""",
    # Not from the facts: a visitor's day in an experiment is the day of their first exposure over all of
    # history (variant_exposures), converters those with a lead at or after it (conversions), as 0006's
    # v_variant_lift defined them (sql/0103_variant_rollup.sql). The candidates are the visitors with an
    # exposure row on the day (their first exposure to some variant), so a day reads no other day's rows
    # twice.
    "variant_daily": """
SELECT e.site_id AS site_id, toDate(e.first_at) AS day, e.experiment_id AS experiment_id,
       e.variant_id AS variant_id, count() AS visitors, countIf(c.last_lead_at >= e.first_at) AS converters
FROM
(
    SELECT site_id, experiment_id, anonymous_id,
           argMin(variant_id_, (first_exposed_at, variant_id_)) AS variant_id, min(first_exposed_at) AS first_at
    FROM (SELECT site_id, experiment_id, variant_id AS variant_id_, anonymous_id, first_exposed_at
          FROM variant_exposures
          WHERE (site_id, experiment_id, anonymous_id) IN
                (SELECT site_id, experiment_id, anonymous_id FROM variant_exposures
                 WHERE toDate(first_exposed_at) = {{day:Date}} AND {sites}))
    GROUP BY site_id, experiment_id, anonymous_id
    HAVING toDate(first_at) = {{day:Date}}
) AS e
LEFT JOIN
(
    SELECT site_id, anonymous_id, max(last_lead_at) AS last_lead_at
    FROM conversions
    WHERE (site_id, anonymous_id) IN
          (SELECT site_id, anonymous_id FROM variant_exposures
           WHERE toDate(first_exposed_at) = {{day:Date}} AND {sites})
    GROUP BY site_id, anonymous_id
) AS c ON e.site_id = c.site_id AND e.anonymous_id = c.anonymous_id
GROUP BY site_id, day, experiment_id, variant_id""",
    # The event roll-ups of sql/0121_event_rollups.sql: the human events of the human sessions started on
    # the day ({facts}), from that day and the next (the cut of FACTS_SQL), by the event's own visitor.
    "page_daily": f"""
SELECT site_id, {{{{day:Date}}}} AS day, path, count() AS pageviews, uniqExactState(anonymous_id) AS visitors,
       groupBitmapState(n) AS visitor_bitmap
FROM events LEFT JOIN {{numbers}} USING (site_id, anonymous_id)
WHERE {_DAY_EVENTS} AND type = 'page_view'
GROUP BY site_id, path""",
    "event_type_daily": f"""
SELECT site_id, {{{{day:Date}}}} AS day, type, count() AS events, uniqExactState(anonymous_id) AS visitors,
       groupBitmapState(n) AS visitor_bitmap
FROM events LEFT JOIN {{numbers}} USING (site_id, anonymous_id)
WHERE {_DAY_EVENTS}
GROUP BY site_id, type""",
    # one row per distinct key of an event's props, with props[key] (the first value of a repeated key)
    "event_prop_daily": f"""
SELECT site_id, {{{{day:Date}}}} AS day, type, key, props[key] AS value, count() AS events,
       uniqExactState(anonymous_id) AS visitors
FROM events ARRAY JOIN arrayDistinct(mapKeys(props)) AS key
WHERE {_DAY_EVENTS} AND type != 'page_view' AND notEmpty(props)
GROUP BY site_id, type, key, value""",
}
ROLLUP_COLUMNS = {
    "traffic_daily": "site_id, day, visitors, sessions, pageviews, bounces, duration_ms, engaged_sessions, engaged_ms, "
                     "visitor_bitmap",
    "landing_daily": "site_id, day, landing_path, visitors, sessions, engaged_sessions, revenue, visitor_bitmap, leads",
    "channel_daily": "site_id, day, channel, utm_source, utm_medium, utm_campaign, visitors, sessions, "
                     "engaged_sessions, revenue, visitor_bitmap, leads",
    "variant_daily": "site_id, day, experiment_id, variant_id, visitors, converters",
    "page_daily": "site_id, day, path, pageviews, visitors, visitor_bitmap",
    "event_type_daily": "site_id, day, type, events, visitors, visitor_bitmap",
    "event_prop_daily": "site_id, day, type, key, value, events, visitors",
}


def partition_id(day: dt.date) -> str:
    """The partition id of `day` in every roll-up (PARTITION BY a Date: 'YYYYMMDD')."""
    return day.strftime("%Y%m%d")


def rebuild_day(client: Client, day: dt.date) -> None:
    """Recompute `day` of every roll-up from `events` and swap it in, table by table, atomically (into
    the twin of a table whose new definition version is being built, `rebuild_versioned`).

    Raises ClickHouseError (the day keeps its previous contents; its mark stays, so the next run
    rebuilds it). The caller holds the fold lease (`fold`, `locked`): the staging tables are shared.
    """
    rebuild_versioned(client, day, prepare_versions(client))


def build_day(client: Client, day: dt.date, sites: Collection[str] | None = None,
              into: Mapping[str, str] | None = None) -> None:
    """Recompute `day` of every roll-up from `events` into the staging tables (the recount).

    `sites`: rebuild only these sites' rows of the day (None: every site). The other sites' rows are
    the ones the day holds now in each table's target (`into`: table -> where its day goes, as in
    `swap_day`; a table mapped to "" is not swapped, so nothing is copied for it): its partition is
    copied into the staging table (`REPLACE PARTITION`, hard links: no rows are read), those sites'
    rows are deleted there (a lightweight DELETE: a mask) and recomputed. Every row of a roll-up
    belongs to one site and is computed from that site's events only (FACTS_SQL, ROLLUP_SQL,
    NUMBER_SQL), so the day equals a full recount; an import of one site's history no longer rebuilds
    the days of every other site (BENCHMARKS.md "Import").
    """
    params: dict[str, Any] = {"day": day, **site_params(sites)}
    for table in TABLES:
        client.command(f"CREATE TABLE IF NOT EXISTS {STAGING_PREFIX}{table} AS {table}")
        client.command(f"TRUNCATE TABLE {STAGING_PREFIX}{table}")
        target = table if into is None else into.get(table, table)
        if sites is not None and target:
            client.command(f"ALTER TABLE {STAGING_PREFIX}{table} REPLACE PARTITION ID '{partition_id(day)}' "
                           f"FROM {target}", settings={"allow_replace_partition_from_empty_source": 1})
            client.command(f"DELETE FROM {STAGING_PREFIX}{table} WHERE site_id IN {{sites:Array(String)}}",
                           parameters=params, settings={"lightweight_deletes_sync": 2})
    client.command(f"INSERT INTO {STAGING_PREFIX}session_facts ({FACTS_COLUMNS}) {FACTS_SQL}",
                   parameters=params, settings=FOLD_SETTINGS)
    number_visitors(client, day, sites)
    for table, sql in ROLLUP_SQL.items():
        client.command(f"INSERT INTO {STAGING_PREFIX}{table} ({ROLLUP_COLUMNS[table]}) "
                       + sql.format(facts=f"{STAGING_PREFIX}session_facts", numbers=DAY_NUMBERS, sites=SITES),
                       parameters=params, settings=FOLD_SETTINGS)


def number_visitors(client: Client, day: dt.date, sites: Collection[str] | None = None) -> None:
    """Give the visitors of `day` (of `sites`; None: every site) without a number one (NUMBER_SQL), and
    copy the numbers of all of those visitors into DAY_NUMBERS for the roll-ups' bitmaps
    (sql/0122_visitor_bitmaps.sql). The caller holds the fold lease: one writer of visitor_numbers."""
    params: dict[str, Any] = {"day": day, **site_params(sites)}
    client.command(f"CREATE TABLE IF NOT EXISTS {DAY_NUMBERS} AS visitor_numbers")
    client.command(f"TRUNCATE TABLE {DAY_NUMBERS}")
    client.command(NUMBER_SQL, parameters=params, settings=FOLD_SETTINGS)
    client.command(DAY_NUMBERS_SQL, parameters=params, settings=FOLD_SETTINGS)


def swap_day(client: Client, day: dt.date, into: Mapping[str, str] | None = None) -> None:
    """Swap the staging tables' `day` (build_day) into the roll-ups, table by table, atomically.

    `into`: table -> where its day goes (default: the table itself); a table mapped to "" is skipped.
    """
    for table in TABLES:
        target = table if into is None else into.get(table, table)
        if not target:
            continue
        # an empty day (every session gone, e.g. after a repair) replaces the day with nothing, atomically
        client.command(f"ALTER TABLE {target} REPLACE PARTITION ID '{partition_id(day)}' FROM {STAGING_PREFIX}{table}",
                       settings={"allow_replace_partition_from_empty_source": 1})


def declared_versions() -> dict[str, int]:
    """table -> the definition version the code declares, for every table of TABLES."""
    return {table: VERSIONS.get(table, 1) for table in TABLES}


def prepare_versions(client: Client, *, create: bool = True) -> dict[str, versions.Build]:
    """The tables whose declared definition version is not the one they hold, and the roll-ups built from
    session_facts when it is one of them (reports/versions.py)."""
    fresh = not client.query("SELECT count() FROM fold_runs").result_rows[0][0]
    shapes = versions.columns(client, [*TABLES, *(STAGING_PREFIX + t for t in TABLES)])
    for table in TABLES:  # a staging table made before a migration changed its table's columns
        if STAGING_PREFIX + table in shapes and shapes[STAGING_PREFIX + table] != shapes.get(table):
            client.command(f"DROP TABLE IF EXISTS {STAGING_PREFIX}{table} SYNC")
    depends = {table: ("session_facts",) for table, sql in ROLLUP_SQL.items() if "{facts}" in sql}
    return versions.prepare(client, declared_versions(), fresh=fresh, create=create, depends=depends)


def rebuild_versioned(client: Client, day: dt.date, builds: Mapping[str, versions.Build], *,
                      live: bool = True, sites: Collection[str] | None = None) -> None:
    """Rebuild `day`: into each table, or its twin when a new definition version is being built;
    without `live`, into the twins only (a day of the backfill). `sites`: only these sites' rows
    (`build_day`); ignored while a new definition version is being built (a twin may not hold the
    day's other sites yet), when the day is rebuilt in full."""
    into = {t: (builds[t].twin if t in builds else (t if live else "")) for t in TABLES}
    build_day(client, day, None if builds else sites, into)
    swap_day(client, day, into)
    versions.record(client, builds, day)


def backfill(client: Client, builds: Mapping[str, versions.Build], limit: int | None,
             progress: Callable[[dt.date], None] | None = None) -> tuple[list[dt.date], list[str]]:
    """Build up to `limit` (None: all) missing days into the twins of `builds`, then switch them all
    when none lacks a day (the roll-ups before session_facts, versions.switch) and put the dashboard
    views in the form the switched roll-ups allow (reports/views.py). Returns the days built and the
    tables switched (in TABLES order)."""
    if not builds:
        return [], []
    todo = versions.remaining_days(client, builds)
    done = todo[:limit] if limit is not None else todo
    for day in done:
        rebuild_versioned(client, day, builds, live=False)
        if progress is not None:
            progress(day)
    if len(done) < len(todo):
        return done, []
    switched = [table for table in TABLES if table in builds]
    for table in reversed(switched):
        versions.switch(client, builds[table])
    views.sync(client)  # the views on what the switched roll-ups now hold (`reconcile --repair` too)
    return done, switched


#: A mark's site_id for "every site": the marks written before sql/0123_fold_site_marks.sql.
ALL_SITES = ""


def dirty_parts(client: Client) -> dict[str, list[tuple[dt.date, str]]]:
    """Part name of `fold_dirty_days` -> the (day, site_id) it marks (site_id ALL_SITES: every site)."""
    rows = client.query("SELECT _part, arraySort(groupUniqArray((day, site_id))) FROM fold_dirty_days "
                        "GROUP BY _part").result_rows
    return {str(part): [(day, str(site)) for day, site in marks] for part, marks in rows}


def dirty_sites(parts: Mapping[str, Sequence[tuple[dt.date, str]]]) -> dict[dt.date, set[str] | None]:
    """day -> the sites whose marks in `parts` name it, or None when one names every site."""
    out: dict[dt.date, set[str] | None] = {}
    for marks in parts.values():
        for day, site in marks:
            if site == ALL_SITES:
                out[day] = None
            elif day not in out:
                out[day] = {site}
            elif (known := out[day]) is not None:
                known.add(site)
    return out


def history_days(client: Client) -> set[dt.date]:
    """Every day of `events` (and the day before each) and of leads when the fold never ran (the backfill
    of an upgraded installation), else nothing."""
    if client.query("SELECT count() FROM fold_runs").result_rows[0][0]:
        return set()
    rows = client.query("SELECT DISTINCT arrayJoin([toDate(ts), toDate(ts) - 1]) FROM events UNION DISTINCT "
                        "SELECT DISTINCT toDate(occurred_at) FROM lead_events").result_rows
    return {day for (day,) in rows}


def dirty_visitor_parts(client: Client) -> list[str]:
    """Part names of `fold_dirty_visitors` (visitors with a new lead, sql/0103_variant_rollup.sql)."""
    return [str(p) for (p,) in client.query("SELECT DISTINCT _part FROM fold_dirty_visitors").result_rows]


def lead_days(client: Client, parts: Sequence[str]) -> set[dt.date]:
    """The first-exposure days (in any experiment) of the visitors marked in `parts` of
    `fold_dirty_visitors`: the `variant_daily` days whose converters a new lead may change."""
    if not parts:
        return set()
    rows = client.query(
        "SELECT DISTINCT toDate(min(first_exposed_at)) FROM variant_exposures "
        "WHERE (site_id, anonymous_id) IN (SELECT site_id, anonymous_id FROM fold_dirty_visitors "
        "WHERE _part IN {parts:Array(String)}) GROUP BY site_id, experiment_id, anonymous_id",
        parameters={"parts": list(parts)}).result_rows
    return {day for (day,) in rows}


def moved_days(client: Client, days: Iterable[dt.date], sites: Collection[str] | None = None) -> set[dt.date]:
    """Days after the earliest of `days`, not in `days`, with an exposure of a visitor (of `sites`; None:
    every site) whose first exposure is now on one of `days`: where such a visitor was counted before a
    late, earlier exposure moved them (their old first exposure is one of these),
    sql/0103_variant_rollup.sql. A site whose events marked none of `days` has no new exposure there, so
    none of its visitors moved: the fold passes the sites of the marks when no day is marked for every site."""
    wanted = sorted(set(days))
    if not wanted:
        return set()
    rows = client.query(
        "SELECT DISTINCT toDate(ts) FROM events WHERE is_bot = 0 AND notEmpty(variants) AND toDate(ts) > {lo:Date} "
        f"AND {SITES} AND (site_id, anonymous_id) IN (SELECT site_id, anonymous_id FROM variant_exposures "
        "WHERE (site_id, experiment_id, anonymous_id) IN (SELECT site_id, experiment_id, anonymous_id "
        f"FROM variant_exposures WHERE toDate(first_exposed_at) IN {{days:Array(Date)}} AND {SITES}) "
        "GROUP BY site_id, experiment_id, anonymous_id HAVING toDate(min(first_exposed_at)) IN {days:Array(Date)})",
        parameters={"lo": wanted[0], "days": wanted, **site_params(sites)}
    ).result_rows
    return {day for (day,) in rows} - set(wanted)


def drop_parts(client: Client, parts: Iterable[str], table: str = "fold_dirty_days") -> None:
    """Drop the marks the run read from `table`; a part merged meanwhile is gone by that name: its
    marks stay (and its days are rebuilt once more next run)."""
    for part in parts:
        try:
            client.command(f"ALTER TABLE {table} DROP PART '{part}'")
        except ClickHouseError as exc:
            log.debug("fold: mark part %s of %s not dropped (%s); its days are rebuilt next run", part, table,
                      str(exc)[:120])


@dataclasses.dataclass(frozen=True)
class FoldRun:
    """What one run did: the days rebuilt, when it started (`watermark`), seconds it took, the days of
    history built for a new definition version (`backfilled`) and the tables switched to it (`switched`)."""

    days: tuple[dt.date, ...]
    watermark: dt.datetime
    seconds: float
    backfilled: tuple[dt.date, ...] = ()
    switched: tuple[str, ...] = ()


class FoldLease:
    """One fold at a time across processes on one ClickHouse server (table `fold_lease`).

    A claim is a row (holder, claimed_at = the server's now64, expires_at); the holder of the earliest
    live (unexpired, unreleased) claim holds the lease. `acquire` inserts a claim and checks that it
    is the earliest twice, LEASE_SETTLE_S apart (a claim inserted meanwhile with an earlier time would
    show by then); a claimant that loses withdraws its claim. A fold outlasting LEASE_S loses the
    lease to the next claimant, which is why LEASE_S is long next to a fold of a few days.
    """

    def __init__(self, client: Client, lease_s: float = LEASE_S) -> None:
        self.client = client
        self.lease_s = lease_s

    def _claim(self, holder: str, released: int) -> None:
        self.client.command(
            "INSERT INTO fold_lease (holder, claimed_at, expires_at, released) "
            "SELECT {h:String}, now64(6, 'UTC'), now64(6, 'UTC') + toIntervalMillisecond({ms:UInt64}), {r:UInt8}",
            parameters={"h": holder, "ms": int(self.lease_s * 1000), "r": released}, settings=FOLD_SETTINGS)

    def holder(self) -> str | None:
        """The holder of the earliest live claim, or None."""
        rows = self.client.query(
            "SELECT holder FROM fold_lease GROUP BY holder "
            "HAVING max(released) = 0 AND max(expires_at) > now64(6, 'UTC') ORDER BY min(claimed_at), holder LIMIT 1"
        ).result_rows
        return str(rows[0][0]) if rows else None

    def acquire(self) -> str | None:
        """A holder id when this process now holds the lease, else None (another fold runs)."""
        me = uuid.uuid4().hex
        self._claim(me, 0)
        if self.holder() == me:
            time.sleep(LEASE_SETTLE_S)
            if self.holder() == me:
                return me
        self._claim(me, 1)
        return None

    def release(self, holder: str) -> None:
        self._claim(holder, 1)


_PROCESS_LOCK = threading.Lock()


@contextlib.contextmanager
def locked(client: Client) -> Iterator[str | None]:
    """Hold the fold's process lock and lease for the block: yields the holder id, or None when another
    process holds the lease (the block must then do nothing).

    On the embedded engine the process lock is the whole lock: chDB locks its directory, so no other
    process can fold it, and a claim in `fold_lease` can only be left by a process that was killed
    mid-fold. Honouring it would hold every fold off for LEASE_S after a crash.
    """
    with _PROCESS_LOCK:
        if is_embedded(client):
            yield f"embedded-{uuid.uuid4().hex}"
            return
        lease = FoldLease(client)
        holder = lease.acquire()
        try:
            yield holder
        finally:
            if holder is not None:
                lease.release(holder)


#: The marks tables: a fold drops the parts it read by name (`drop_parts`), so their merges stop during a run
#: (`merges_paused`): a part merged meanwhile keeps its marks, and its days would be rebuilt again by the
#: next run, in full (BENCHMARKS.md "Import": the 4 prefilled days of 10 M events, ~40 s, in the fold of an
#: import that followed).
MARK_TABLES = ("fold_dirty_days", "fold_dirty_visitors")


@contextlib.contextmanager
def merges_paused(client: Client, tables: Sequence[str]) -> Iterator[None]:
    """On the embedded engine, stop the background merges of `tables` for the block (`SYSTEM STOP
    MERGES`; a running merge is cancelled) and start them again after it; elsewhere, do nothing.

    Only the embedded engine: the state lives in this process, which is ClickHouse's only user, so a
    process killed in the block leaves nothing stopped. On a server, a fold killed in the block would
    leave the marks tables' merges stopped for every writer, and their parts (one per insert into
    `events`) would pile up until inserts fail. Do not nest blocks over the same table: the inner one
    starts its merges again.
    """
    if not is_embedded(client):
        yield
        return
    for table in tables:
        client.command(f"SYSTEM STOP MERGES {table}")
    try:
        yield
    finally:
        for table in tables:
            client.command(f"SYSTEM START MERGES {table}")


def fold(client: Client, days: Sequence[dt.date] | None = None,
         progress: Callable[[dt.date], None] | None = None,
         backfill_days: int | None = versions.BACKFILL_DAYS_PER_RUN) -> FoldRun | None:
    """One run: rebuild `days` (default: the dirty days) and record it in `fold_runs`.

    A table whose declared definition version (VERSIONS) is not the one it holds gets its days in its
    twin instead, and a run with default `days` adds up to `backfill_days` (None: all) days of history
    to the twin, switching the table when complete (reports/versions.py); a table new to an installation
    (no version yet) is built from all of history in one run, as it has no old version to serve meanwhile.
    None when another fold holds the lease (nothing done). `progress` is called after each day.
    Raises ClickHouseError; the marks of a failed run stay, so the next run does its days again.
    """
    with locked(client) as holder:
        if holder is None:
            log.info("fold: another process is folding; skipped")
            return None
        with merges_paused(client, MARK_TABLES):
            return _run(client, holder, days, progress, backfill_days)


def _run(client: Client, holder: str, days: Sequence[dt.date] | None,
         progress: Callable[[dt.date], None] | None, backfill_days: int | None) -> FoldRun:
    """The body of `fold`, under its lease."""
    started = time.perf_counter()
    watermark = client.query("SELECT now64(6, 'UTC')").result_rows[0][0]
    parts: dict[str, list[tuple[dt.date, str]]] = {}
    visitor_parts: list[str] = []
    normal = days is None
    # the sites of a day only its events' marks name (else every site: a lead's or an exposure's
    # days, the backfill of history, or `days` given)
    only: dict[dt.date, set[str] | None] = {}
    if days is None:
        parts = dirty_parts(client)
        visitor_parts = dirty_visitor_parts(client)
        only = dirty_sites(parts)
        full = history_days(client) | lead_days(client, visitor_parts)
        marked_sites = None if full or None in only.values() else {s for v in only.values() if v for s in v}
        full |= moved_days(client, set(only) | full, marked_sites)
        only.update(dict.fromkeys(full))
        days = sorted(only)
    builds = prepare_versions(client)
    for day in days:
        rebuild_versioned(client, day, builds, sites=only.get(day))
        if progress is not None:
            progress(day)
    drop_parts(client, parts)
    drop_parts(client, visitor_parts, "fold_dirty_visitors")
    # A roll-up with no version yet on an installation the fold already ran on is a table a migration
    # just added (0120 stamped every earlier one): it has no old numbers to keep serving, so it is
    # built from all of history in this run rather than a few days a run.
    limit = None if any(b.stored is None for b in builds.values()) else backfill_days
    backfilled, switched = backfill(client, builds, limit, progress) if normal else ([], [])
    run = FoldRun(tuple(days), watermark, time.perf_counter() - started, tuple(backfilled), tuple(switched))
    # the views on the roll-ups once they hold what the views read: a switch syncs in `backfill`; this
    # covers the roll-ups a first run adopted at their declared version (versions.prepare)
    views.sync(client)
    client.insert("fold_runs", [[watermark, dt.datetime.now(dt.UTC), list(days), holder]],
                  column_names=["watermark", "finished_at", "days", "holder"], settings=FOLD_SETTINGS)
    if days:
        log.info("fold: %d day(s) rebuilt in %.2f s (%s .. %s)", len(days), run.seconds, days[0], days[-1])
    if builds:
        log.info("fold: %d day(s) of history built for new definition versions of %s; switched: %s",
                 len(backfilled), ", ".join(builds), ", ".join(switched) or "none yet")
    return run


class Folder:
    """The fold as a `serve` / flusher component: a run every `interval_s` in a thread, one at the
    start (the roll-ups of history after an upgrade) and one at `stop` (placed before the flushers in
    the component list, it stops after them: the last events drained are folded).

    Give it a client of its own (clickstream.runner.folders does): a clickhouse-connect client runs
    one call at a time (on chDB a lock per handle, over HTTP one session), and a fold's statements
    take seconds on a large history (BENCHMARKS.md "Freshness"), which the flusher's inserts would
    wait out behind them. With `close_client` the client is closed after the last run at `stop`.
    """

    def __init__(self, client: Client, interval_s: float, *, close_client: bool = False) -> None:
        self.client = client
        self.interval_s = interval_s
        self.close_client = close_client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: FoldRun | None = None
        self.failures = 0

    def run_once(self) -> FoldRun | None:
        """One fold run; failures are logged and counted, not raised (the marks stay for the next)."""
        try:
            run = fold(self.client)
        except Exception:
            self.failures += 1
            log.exception("fold: run failed; its days stay dirty for the next run")
            return None
        if run is not None:
            self.last = run
        return run

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fold", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.run_once()
        if self.close_client:
            self.client.close()

    def routes(self) -> Sequence[BaseRoute]:
        return []

    def readiness(self) -> Sequence[Check]:
        return []

    def update_gauges(self) -> None:
        return None
