"""Dashboard query latency: each view (pre-aggregated) vs the same answer computed from `events`.

Method: embedded ClickHouse (chDB), full schema; N synthetic events generated inside ClickHouse
(`INSERT INTO events_ingest SELECT … FROM numbers(N)`, so the same materialized views run as in
production): sessions of ~6 events, visitors of ~3 sessions, 4 landing pages, 7 channels via UTM
and referrers, one two-variant experiment, 0.5% of visitors converting (rows in lead_events).
For each view, a dashboard query on the view and a query computing the same numbers from the raw
`events` table; both answers are compared (they must be equal), each is run 3 times and the median
latency is reported with the ratio raw / view. Sizes: 1 M and 10 M events.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from load.results import write_result

SITE = "bench.example"

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
    0 AS is_bot
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

#: (view, dashboard query on the view, the same numbers computed from events)
SESSIONS_RAW = """
    SELECT site_id, session_id, any(anonymous_id) AS anonymous_id, min(ts) AS started_at, max(ts) AS ended_at,
           countIf(type = 'page_view') AS pageviews, count() AS events,
           argMinIf(path, (ts, toString(event_id)), type = 'page_view') AS entry_path,
           argMin(channel, (ts, toString(event_id))) AS channel,
           argMin(utm_source, (ts, toString(event_id))) AS utm_source,
           argMin(utm_medium, (ts, toString(event_id))) AS utm_medium,
           argMin(utm_campaign, (ts, toString(event_id))) AS utm_campaign,
           (toUnixTimestamp64Milli(max(ts)) - toUnixTimestamp64Milli(min(ts))) / 1000 AS duration_s,
           toUInt8(pageviews = 1 AND events = 1) AS is_bounce
    FROM events WHERE site_id = '{site}' GROUP BY site_id, session_id
"""
QUERIES: list[tuple[str, str, str]] = [
    ("v_sessions",
     "SELECT count(), sum(pageviews), sum(is_bounce), round(sum(duration_s), 3) FROM v_sessions "
     "WHERE site_id = '{site}'",
     "SELECT count(), sum(pageviews), sum(is_bounce), round(sum(duration_s), 3) FROM (" + SESSIONS_RAW + ")"),
    ("v_daily_traffic",
     "SELECT day, visitors, sessions, pageviews, round(bounce_rate, 9), round(avg_duration_s, 6) "
     "FROM v_daily_traffic WHERE site_id = '{site}' ORDER BY day",
     "SELECT toDate(started_at) AS day, uniqExact(anonymous_id), count(), sum(pageviews), round(avg(is_bounce), 9), "
     "round(avg(duration_s), 6) FROM (" + SESSIONS_RAW + ") GROUP BY day ORDER BY day"),
    ("v_landing_pages",
     "SELECT landing_path, sessions, visitors, leads FROM v_landing_pages WHERE site_id = '{site}' "
     "ORDER BY landing_path",
     "SELECT entry_path, count(), uniqExact(anonymous_id), ifNull((SELECT uniqExact(lead_id) FROM lead_events AS l "
     "WHERE l.site_id = '{site}' AND l.landing_path = s.entry_path), 0) FROM (" + SESSIONS_RAW + ") AS s "
     "GROUP BY entry_path ORDER BY entry_path"),
    ("v_channels",
     "SELECT channel, utm_source, utm_medium, utm_campaign, sessions, visitors FROM v_channels "
     "WHERE site_id = '{site}' AND sessions > 0 ORDER BY channel, utm_source, utm_medium, utm_campaign",
     "SELECT channel, utm_source, utm_medium, utm_campaign, count(), uniqExact(anonymous_id) FROM (" + SESSIONS_RAW +
     ") GROUP BY channel, utm_source, utm_medium, utm_campaign ORDER BY channel, utm_source, utm_medium, utm_campaign"),
    ("v_variant_lift",
     "SELECT variant_id, visitors, converters FROM v_variant_lift WHERE site_id = '{site}' AND experiment_id = 'hero' "
     "ORDER BY variant_id",
     "SELECT variant_id, count(), countIf(last_lead >= first_at) FROM ("
     " SELECT anonymous_id, argMin(v.2, ts) AS variant_id, min(ts) AS first_at FROM events "
     " ARRAY JOIN arrayZip(mapKeys(variants), mapValues(variants)) AS v "
     " WHERE site_id = '{site}' AND v.1 = 'hero' AND is_bot = 0 GROUP BY anonymous_id) AS e "
     "LEFT JOIN (SELECT anonymous_id, max(occurred_at) AS last_lead FROM lead_events WHERE site_id = '{site}' "
     " GROUP BY anonymous_id) AS c USING anonymous_id GROUP BY variant_id ORDER BY variant_id"),
]


def _median_ms(client: Any, sql: str, runs: int = 3) -> tuple[float, list[tuple[Any, ...]]]:
    times, rows = [], []
    for _ in range(runs):
        started = time.perf_counter()
        rows = client.query(sql).result_rows
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), [tuple(r) for r in rows]


def run_size(n_events: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-views-"))
    try:
        client = connect(f"chdb://{work / 'clickhouse'}")
        migrate(client)
        now_ms = int(time.time() * 1000)
        started = time.perf_counter()
        chunk = 1_000_000
        for start in range(0, n_events, chunk):
            client.command(GENERATE.format(site=SITE, now_ms=now_ms, start=start, count=min(chunk, n_events - start)),
                           settings={"async_insert": 0})
        client.command(LEADS.format(site=SITE), settings=INSERT_SETTINGS)
        load_s = time.perf_counter() - started
        client.command("OPTIMIZE TABLE sessions FINAL")
        out: dict[str, Any] = {"events": n_events, "load_s": round(load_s, 1), "views": {}}
        for view, on_view, on_events in QUERIES:
            view_ms, view_rows = _median_ms(client, on_view.format(site=SITE))
            raw_ms, raw_rows = _median_ms(client, on_events.format(site=SITE))
            out["views"][view] = {"view_ms": round(view_ms, 1), "raw_ms": round(raw_ms, 1),
                                  "ratio_raw_over_view": round(raw_ms / view_ms, 2),
                                  "same_answer": view_rows == raw_rows}
        client.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: tuple[int, ...] = (1_000_000, 10_000_000)) -> dict[str, Any]:
    results = {"benchmark": "dashboard_views", "engine": "chDB (embedded ClickHouse)", "cpus": os.cpu_count(),
               "sizes": [run_size(n) for n in sizes]}
    return write_result("views", results)


if __name__ == "__main__":
    import sys

    run(tuple(int(a) for a in sys.argv[1:]) or (1_000_000, 10_000_000))
