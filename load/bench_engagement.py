"""What the engagement join costs v_sessions: sql/0031's v_sessions against sql/0006's, same data.

Method: chDB with the full schema; the synthetic events of load.bench_views (N events, sessions of
6) plus one `engagement` report for every page view of a third of the sessions, all through
`events_ingest` so the real materialized views fill `sessions` and `session_engagement`; then the
v_sessions dashboard query of bench_views on the current v_sessions and on 0006's definition
(created as `v_sessions_0006`), interleaved, 9 runs each; median and minimum latency and the
ratio of medians. Both answers are compared for the columns they share.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from clickstream.core import resources
from clickstream.core.clickhouse import connect, migrate
from load.bench_views import GENERATE, SITE
from load.results import write_result

REPORTS = """
INSERT INTO events_ingest
SELECT 'engagement', site_id, anonymous_id, session_id, toUnixTimestamp64Milli(ts) + 1, url, generateUUIDv4(n), '', '',
       tuple('', '', '', '', ''), map(), map('engaged_ms', toString(n % 20000), 'scroll_depth', '50'),
       tuple(1280, 800), 'en', 'Mozilla/5.0', '', toUnixTimestamp64Milli(ts), 'bench-engagement', n,
       'Firefox', '125', 'Linux', '', 'desktop', 0, 0
FROM (SELECT *, rowNumberInAllBlocks() AS n FROM events
      WHERE site_id = '{site}' AND type = 'page_view' AND cityHash64(session_id) % 3 = 0)
"""
QUERY = ("SELECT count(), sum(pageviews), round(sum(duration_s), 3) FROM {view} WHERE site_id = '" + SITE + "'")


def run(n_events: int = 1_000_000, runs: int = 9) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-engagement-"))
    try:
        client = connect(f"chdb://{work / 'clickhouse'}")
        migrate(client)
        now_ms = int(time.time() * 1000)
        for start in range(0, n_events, 1_000_000):
            client.command(GENERATE.format(site=SITE, now_ms=now_ms, start=start,
                                           count=min(1_000_000, n_events - start)), settings={"async_insert": 0})
        client.command(REPORTS.format(site=SITE), settings={"async_insert": 0})
        client.command("OPTIMIZE TABLE sessions FINAL")
        views_0006 = (resources.migrations() / "0006_views.sql").read_text()
        body = re.search(r"CREATE OR REPLACE VIEW v_sessions AS\n(.*?)\n;", views_0006, re.S)
        assert body is not None
        client.command("CREATE VIEW v_sessions_0006 AS " + body.group(1))
        times: dict[str, list[float]] = {"v_sessions_0006": [], "v_sessions": []}
        answers: dict[str, Any] = {}
        for _ in range(runs):
            for view in times:
                started = time.perf_counter()
                answers[view] = client.query(QUERY.format(view=view)).result_rows
                times[view].append((time.perf_counter() - started) * 1000)
        sizes = {table: client.query(f"SELECT count() FROM {table}").result_rows[0][0]
                 for table in ("events", "session_engagement")}
        client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {view: statistics.median(t) for view, t in times.items()}
    return write_result("engagement_join", {
        "benchmark": "engagement_join", "cpus": os.cpu_count(), "load_average": os.getloadavg()[0], **sizes,
        "median_ms": {v: round(m, 1) for v, m in medians.items()},
        "min_ms": {v: round(min(t), 1) for v, t in times.items()},
        "ratio_of_medians": round(medians["v_sessions"] / medians["v_sessions_0006"], 2),
        "same_answer": answers["v_sessions"] == answers["v_sessions_0006"],
    })


if __name__ == "__main__":
    run()
