"""Dashboard views for a site and a range vs the same numbers computed from raw `events`, same run.

Method: embedded ClickHouse (chDB), full schema. N synthetic events generated inside ClickHouse
(`INSERT INTO events_ingest SELECT … FROM numbers(N)`, so every materialized view runs as in
production): 90 days, 3 sites with skew (60 % / 30 % / 10 % of visitors), sessions of 6 events
(two of them at the same millisecond, ordered by `seq`), visitors of ~3 sessions on different days,
4 landing pages, 7 channels via UTM and referrers, one two-variant experiment, 0.5 % of visitors
with a lead. Then one full fold (the backfill: every day rebuilt; timed), and an incremental fold after
one more insert of a day's traffic (timed).

For the largest site and the last 7 days, the last 30 days and all time: each view's dashboard query
(and v_variant_lift_range, the cohort of visitors first exposed in the range)
(sql/README.md "Dashboard queries") and a query computing the same numbers from `events` (+
`lead_events`); both answers compared (must be equal), each run RUNS times: median and p95 latency,
rows read (ClickHouse's summary of the query), raw ÷ view; and the same view queries on 0102's form of
the views (reports/views.py: uniqExact states merged, leads joined), median and equal answers. Plus
the storage of every roll-up (system.parts, bytes on disk). Sizes: `python -m load.bench_views 1000000
10000000` (`make bench`), 100 M with `make bench-large`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from load.results import write_result
from reports import views
from reports.fold import fold

SITES = ("big.example", "mid.example", "small.example")
SITE = SITES[0]
DAYS = 90
RUNS = 7

#: One site, sessions of 6 events over the last ~55 hours (the other benchmarks' data: bench_flusher, bench_query_port,
#: bench_engagement); `seq` 0.
GENERATE = """
INSERT INTO events_ingest
SELECT
    ['page_view', 'click', 'page_view', 'cta_click', 'page_view', 'exposure'][number % 6 + 1] AS type,
    '{site}' AS site_id,
    concat('v', toString(intDiv(number, 18))) AS anonymous_id,
    concat('s', toString(intDiv(number, 6))) AS session_id,
    toInt64({now_ms} - (intDiv(number, 6) % 200000) * 1000 - (6 - number % 6) * 7000) AS ts,
    concat('https://{site}', ['/', '/pricing', '/features', '/blog/launch'][intDiv(number, 6) % 4 + 1],
           ['', '?utm_source=google&utm_medium=cpc&utm_campaign=spring', '?utm_source=newsletter&utm_medium=email',
            '', '', '?utm_source=facebook&utm_medium=paid_social', ''][intDiv(number, 6) % 7 + 1]) AS url,
    generateUUIDv4(number) AS event_id,
    ['', '', '', 'https://www.google.com/', '', '', 'https://blog.partner.example/'][intDiv(number, 6) % 7 + 1]
        AS referrer,
    '' AS title,
    tuple('', '', '', '', '') AS utm,
    if(intDiv(number, 18) % 10 < 8, map('hero', if(intDiv(number, 18) % 2 = 0, 'control', 'B')), map()) AS variants,
    map() AS props,
    tuple(1280, 800) AS screen,
    'en' AS lang,
    'Mozilla/5.0' AS user_agent,
    '' AS ip_hash,
    toInt64({now_ms}) AS received_at,
    'bench' AS spool_segment,
    number AS spool_offset,
    'Firefox' AS browser, '125' AS browser_version, 'Linux' AS os, '' AS os_version, 'desktop' AS device_type,
    0 AS is_bot,
    0 AS seq
FROM numbers({start}, {count})
"""

LEADS = """
INSERT INTO lead_events (event_id, lead_id, site_id, anonymous_id, occurred_at, session_id, landing_path,
                         last_touch, variants, emitted_at)
SELECT generateUUIDv4(), concat('lead-', anonymous_id), site_id, anonymous_id, max(ts) + 1, any(session_id),
       argMin(path, ts), tuple('', '', '', '', '', '', argMin(channel, ts), argMin(path, ts), NULL), map(), now64(3)
FROM events WHERE site_id = '{site}' AND cityHash64(anonymous_id) % 200 = 0
GROUP BY site_id, anonymous_id
"""

GENERATE_SITES = """
INSERT INTO events_ingest
SELECT
    ['page_view', 'click', 'page_view', 'cta_click', 'page_view', 'exposure'][number % 6 + 1] AS type,
    multiIf(intDiv(number, 18) % 10 < 6, '{s0}', intDiv(number, 18) % 10 < 9, '{s1}', '{s2}') AS site_id,
    concat('v', toString(intDiv(number, 18))) AS anonymous_id,
    concat('s', toString(intDiv(number, 6))) AS session_id,
    toInt64({start_ms} + (cityHash64(intDiv(number, 6)) % ({days} * 86400 - 3600)) * 1000
            + least(number % 6, 4) * 7000) AS ts,
    concat('https://', site_id, ['/', '/pricing', '/features', '/blog/launch'][intDiv(number, 6) % 4 + 1],
           if(number % 6 = 0, ['', '?utm_source=google&utm_medium=cpc&utm_campaign=spring',
                               '?utm_source=newsletter&utm_medium=email', '', '',
                               '?utm_source=facebook&utm_medium=paid_social', ''][intDiv(number, 6) % 7 + 1],
              '')) AS url,
    generateUUIDv4(number) AS event_id,
    if(number % 6 = 0,
       ['', '', '', 'https://www.google.com/', '', '', 'https://blog.partner.example/'][intDiv(number, 6) % 7 + 1],
       '') AS referrer,
    '' AS title,
    tuple('', '', '', '', '') AS utm,
    if(intDiv(number, 18) % 10 < 8, map('hero', if(intDiv(number, 18) % 2 = 0, 'control', 'B')), map()) AS variants,
    map() AS props,
    tuple(1280, 800) AS screen,
    'en' AS lang,
    'Mozilla/5.0' AS user_agent,
    '' AS ip_hash,
    ts AS received_at,
    '{segment}' AS spool_segment,
    number AS spool_offset,
    'Firefox' AS browser, '125' AS browser_version, 'Linux' AS os, '' AS os_version, 'desktop' AS device_type,
    0 AS is_bot,
    number % 6 AS seq
FROM numbers({start}, {count})
"""

LEADS_ALL = """
INSERT INTO lead_events (event_id, lead_id, site_id, anonymous_id, occurred_at, session_id, landing_path,
                         last_touch, variants, emitted_at)
SELECT generateUUIDv4(), concat('lead-', anonymous_id), site_id, anonymous_id, max(ts) + 1, any(session_id),
       argMin(path, ts), tuple('', '', '', '', '', '', argMin(channel, ts), argMin(path, ts), NULL), map(), now64(3)
FROM events WHERE cityHash64(anonymous_id) % 200 = 0
GROUP BY site_id, anonymous_id
"""

#: Sessions of {site} started in [{first}, {last}], from events: the definitions of reports/fold.py.
SESSIONS_RAW = """
    SELECT session_id, argMin(anonymous_id, (ts, seq, spool_segment, spool_offset)) AS anonymous_id,
           min(ts) AS started_at, max(ts) AS ended_at, countIf(type = 'page_view') AS pageviews, count() AS events,
           argMinIf(path, (ts, seq, spool_segment, spool_offset), type = 'page_view') AS entry_path,
           argMin((channel, utm_source, utm_medium, utm_campaign), (ts, seq, spool_segment, spool_offset)) AS touch,
           toUInt8(pageviews >= 2 OR events > pageviews) AS is_engaged,
           toUInt8(pageviews = 1 AND NOT is_engaged) AS is_bounce
    FROM events
    WHERE site_id = '{site}' AND toDate(ts) >= toDate('{first}') - 1 AND toDate(ts) <= toDate('{last}') + 1
      AND is_bot = 0
    GROUP BY session_id
    HAVING toDate(started_at) BETWEEN '{first}' AND '{last}'
"""
LEADS_RAW = ("SELECT {key}, uniqExact(lead_id) AS leads FROM lead_events WHERE site_id = '{site}' "
             "AND toDate(occurred_at) BETWEEN '{first}' AND '{last}' GROUP BY {key}")

#: (view, dashboard query on the view, the same numbers computed from events)
QUERIES: list[tuple[str, str, str]] = [
    ("v_daily_traffic",
     "SELECT day, visitors, sessions, pageviews, round(bounce_rate, 9) FROM v_daily_traffic "
     "WHERE site_id = '{site}' AND day BETWEEN '{first}' AND '{last}' ORDER BY day",
     "SELECT toDate(started_at) AS day, uniqExact(anonymous_id), count(), sum(pageviews), round(avg(is_bounce), 9) "
     "FROM (" + SESSIONS_RAW + ") GROUP BY day ORDER BY day"),
    ("v_traffic_range",
     "SELECT visitors, sessions, pageviews, engaged_sessions FROM v_traffic_range(site = '{site}', from = '{first}', "
     "to = '{last}')",
     "SELECT uniqExact(anonymous_id), count(), sum(pageviews), sum(is_engaged) FROM (" + SESSIONS_RAW + ")"),
    ("v_sessions",
     "SELECT count(), sum(pageviews), sum(is_bounce) FROM v_sessions WHERE site_id = '{site}' "
     "AND started_at >= toDate('{first}') AND started_at < toDate('{last}') + 1",
     "SELECT count(), sum(pageviews), sum(is_bounce) FROM (" + SESSIONS_RAW + ")"),
    ("v_landing_pages_range",
     "SELECT landing_path, sessions, visitors, leads FROM v_landing_pages_range(site = '{site}', from = '{first}', "
     "to = '{last}') ORDER BY landing_path",
     "SELECT landing_path, sessions, visitors, leads FROM (SELECT entry_path AS landing_path, count() AS sessions, "
     "uniqExact(anonymous_id) AS visitors FROM (" + SESSIONS_RAW + ") WHERE pageviews > 0 GROUP BY landing_path) AS s "
     "FULL OUTER JOIN (" + LEADS_RAW.replace("{key}", "landing_path") + ") AS l USING landing_path "
     "ORDER BY landing_path"),
    ("v_channels_range",
     "SELECT channel, utm_source, utm_medium, utm_campaign, sessions, visitors FROM v_channels_range("
     "site = '{site}', from = '{first}', to = '{last}') WHERE sessions > 0 "
     "ORDER BY channel, utm_source, utm_medium, utm_campaign",
     "SELECT touch.1 AS c, touch.2 AS s, touch.3 AS m, touch.4 AS k, count(), uniqExact(anonymous_id) FROM ("
     + SESSIONS_RAW + ") GROUP BY c, s, m, k ORDER BY c, s, m, k"),
]
#: All of history: the plain views, and the raw query over every day.
LIFT = ("v_variant_lift",
        "SELECT variant_id, visitors, converters FROM v_variant_lift WHERE site_id = '{site}' "
        "AND experiment_id = 'hero' "
        "ORDER BY variant_id",
        "SELECT variant_id, count(), countIf(last_lead >= first_at) FROM ("
        " SELECT anonymous_id, argMin(v.2, (ts, v.2)) AS variant_id, min(ts) AS first_at FROM events "
        " ARRAY JOIN arrayZip(mapKeys(variants), mapValues(variants)) AS v "
        " WHERE site_id = '{site}' AND v.1 = 'hero' AND is_bot = 0 GROUP BY anonymous_id) AS e "
        "LEFT JOIN (SELECT anonymous_id, max(occurred_at) AS last_lead FROM lead_events WHERE site_id = '{site}' "
        " GROUP BY anonymous_id) AS c USING anonymous_id GROUP BY variant_id ORDER BY variant_id")
#: The cohort first exposed in a range (sql/0103_variant_rollup.sql): the range view, and from events the
#: visitors whose first exposure over all of history is in the range (so the raw query reads all of it).
LIFT_RANGE = ("v_variant_lift_range",
              "SELECT variant_id, visitors, converters FROM v_variant_lift_range(site = '{site}', from = '{first}', "
              "to = '{last}') WHERE experiment_id = 'hero' ORDER BY variant_id",
              LIFT[2].replace("GROUP BY anonymous_id) AS e",
                              "GROUP BY anonymous_id HAVING toDate(first_at) BETWEEN '{first}' AND '{last}') AS e"))


def rows_read(client: Client, sql: str) -> int:
    """Rows the query reads from its tables after partition and primary-key pruning (EXPLAIN ESTIMATE;
    chDB's query summary reports result rows, not rows read)."""
    return sum(int(r[3]) for r in client.query("EXPLAIN ESTIMATE " + sql).result_rows)


def _measure(client: Client, sql: str, runs: int = RUNS) -> dict[str, Any]:
    times: list[float] = []
    rows: list[tuple[Any, ...]] = []
    for _ in range(runs):
        started = time.perf_counter()
        result = client.query(sql)
        times.append((time.perf_counter() - started) * 1000)
        rows = [tuple(r) for r in result.result_rows]
    read_rows = rows_read(client, sql)
    times.sort()
    return {"median_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 1),
            "read_rows": read_rows, "rows": rows}


def _generate(client: Client, n_events: int, start_ms: int, days: int, segment: str, offset: int = 0) -> None:
    chunk = 1_000_000
    for start in range(offset, offset + n_events, chunk):
        count = min(chunk, offset + n_events - start)
        client.command(GENERATE_SITES.format(s0=SITES[0], s1=SITES[1], s2=SITES[2], start_ms=start_ms, days=days,
                                       segment=segment, start=start, count=count),
                       settings={**INSERT_SETTINGS, "insert_deduplication_token": f"{segment}-{start}"})


def load_history(client: Client, n_events: int) -> tuple[dt.date, dt.date]:
    """Load `n_events` synthetic events (GENERATE_SITES) over the DAYS days ending today, and their leads
    (LEADS_ALL), into a migrated database. Returns (first day, today), UTC."""
    today = dt.datetime.now(dt.UTC).date()
    first_day = today - dt.timedelta(days=DAYS - 1)
    start_ms = int(dt.datetime.combine(first_day, dt.time(), dt.UTC).timestamp() * 1000)
    _generate(client, n_events, start_ms, DAYS - 1, "00000000000000001-bench")
    client.command(LEADS_ALL, settings=INSERT_SETTINGS)
    return first_day, today


def ranges(first_day: dt.date, today: dt.date) -> dict[str, tuple[dt.date, dt.date]]:
    """The dashboard ranges measured: label -> (first, last day), the last 7 and 30 days and all of history."""
    return {"7d": (today - dt.timedelta(days=6), today), "30d": (today - dt.timedelta(days=29), today),
            "all": (first_day - dt.timedelta(days=1), today)}


def storage(client: Client) -> dict[str, dict[str, int]]:
    """Rows and bytes on disk of events and every roll-up (active parts)."""
    rows = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts WHERE active AND database = currentDatabase() "
        "AND table IN ('events', 'session_facts', 'traffic_daily', 'landing_daily', 'channel_daily', 'sessions', "
        "'variant_exposures', 'variant_daily') GROUP BY table ORDER BY table").result_rows
    return {str(t): {"rows": int(r), "bytes": int(b)} for t, r, b in rows}


def run_size(n_events: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-views-"))
    try:
        client = connect(f"chdb://{work / 'clickhouse'}")
        migrate(client)
        started = time.perf_counter()
        first_day, today = load_history(client, n_events)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        full = fold(client)
        fold_all_s = time.perf_counter() - started
        # one more day of traffic arrives (today's): the incremental fold rebuilds today and yesterday
        extra = max(6 * 18, n_events // DAYS // 6 * 6)
        today_ms = int(dt.datetime.combine(today, dt.time(), dt.UTC).timestamp() * 1000)
        # offset: a multiple of 18, so the new sessions and visitors are new (not the tail of the last ones)
        _generate(client, extra, today_ms, 1, "00000000000000002-bench", offset=-(-n_events // 18) * 18)
        started = time.perf_counter()
        incremental = fold(client)
        fold_day_s = time.perf_counter() - started
        out: dict[str, Any] = {
            "events": n_events + extra, "load_s": round(load_s, 1),
            "fold_all_days_s": round(fold_all_s, 1), "fold_all_days": len(full.days) if full else None,
            "fold_incremental_s": round(fold_day_s, 2),
            "fold_incremental_days": [str(d) for d in incremental.days] if incremental else None,
            "storage": storage(client), "views": {},
        }
        measured = ranges(first_day, today)
        for view, on_view, on_events in QUERIES:
            for label, (first, last) in measured.items():
                fmt = {"site": SITE, "first": first, "last": last}
                view_sql = on_view.format(**fmt)
                v, r = _measure(client, view_sql), _measure(client, on_events.format(**fmt), runs=3)
                out["views"][f"{view} {label}"] = _row(v, r)
        # the same view queries on 0102's form of the views (uniqExact states merged, leads joined from
        # lead_events: reports/views.py), same data, then the views put back on the roll-ups
        for _, _, before in views.forms().values():
            client.command(before)
        for view, on_view, _ in QUERIES:
            for label, (first, last) in measured.items():
                b = _measure(client, on_view.format(site=SITE, first=first, last=last))
                row = out["views"][f"{view} {label}"]
                row["before_form_median_ms"] = b["median_ms"]
                row["before_form_same_answer"] = b["rows"] == row.pop("_rows")
        views.sync(client)
        v, r = _measure(client, LIFT[1].format(site=SITE)), _measure(client, LIFT[2].format(site=SITE), runs=3)
        out["views"]["v_variant_lift all"] = _row(v, r)
        for label, (first, last) in measured.items():
            fmt = {"site": SITE, "first": first, "last": last}
            v, r = _measure(client, LIFT_RANGE[1].format(**fmt)), _measure(client, LIFT_RANGE[2].format(**fmt), runs=3)
            out["views"][f"v_variant_lift_range {label}"] = _row(v, r)
        for row in out["views"].values():
            row.pop("_rows", None)
        client.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _row(view: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    return {"view_median_ms": view["median_ms"], "view_p95_ms": view["p95_ms"], "view_read_rows": view["read_rows"],
            "raw_median_ms": raw["median_ms"], "raw_p95_ms": raw["p95_ms"], "raw_read_rows": raw["read_rows"],
            "raw_over_view": round(raw["median_ms"] / max(view["median_ms"], 1e-3), 1),
            "same_answer": view["rows"] == raw["rows"], "answer_rows": len(view["rows"]), "_rows": view["rows"]}


def run(sizes: tuple[int, ...] = (1_000_000, 10_000_000)) -> dict[str, Any]:
    results = {"benchmark": "dashboard_views", "engine": "chDB (embedded ClickHouse)", "cpus": os.cpu_count(),
               "site": SITE, "days": DAYS, "runs": RUNS, "sizes": [run_size(n) for n in sizes]}
    return write_result("views", results)


def run_large() -> dict[str, Any]:
    """`make bench-large`: 100 M events."""
    return run((100_000_000,))


if __name__ == "__main__":
    import sys

    run(tuple(int(a) for a in sys.argv[1:]) or (1_000_000, 10_000_000))
