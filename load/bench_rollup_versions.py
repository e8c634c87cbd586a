"""Dashboard views before, during and after a roll-up definition change (reports/versions.py), same run.

Method: the data of load/bench_views.py (N events generated inside ClickHouse over 90 days, 3 sites,
one full fold). Then, for the largest site and the last 7 days, 30 days and all time, every dashboard
query of load/bench_views.py QUERIES is timed (median and p95 of RUNS) at three moments:
- `before`: version 1 of every roll-up, nothing pending;
- `during`: `traffic_daily` declared at version 2 (a bounce is every single-page session, as in
  tests/integration/test_rollup_versions.py) and half of the days built into its twin: the views still
  read version 1 (their answers are checked equal to `before`);
- `after`: the build completed and switched in. This data has no single-page session (sessions of 6
  events, 3 of them page views), so every answer stays equal to `before` (checked): what is measured is
  the latency of the views on the old table, while the twin is being filled, and on the switched table.
Plus the cost of the build: the fold runs of the backfill (seconds, days) next to the full fold.
`python -m load.bench_rollup_versions [N]` (default 1 000 000), `python -m load.bench rollup-versions`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clickstream.core.clickhouse import connect, migrate
from load.bench_views import DAYS, QUERIES, SITE, _measure, load_history, ranges
from load.results import write_result
from reports import fold as fold_module
from reports.fold import fold

OLD_BOUNCES = "sum(is_bounce) AS bounces"
NEW_BOUNCES = "sum({facts}.pageviews = 1) AS bounces"


def _views(client: Any, today: dt.date, first_day: dt.date) -> dict[str, dict[str, Any]]:
    out = {}
    for view, on_view, _ in QUERIES:
        for label, (first, last) in ranges(first_day, today).items():
            out[f"{view} {label}"] = _measure(client, on_view.format(site=SITE, first=first, last=last))
    return out


def run_size(n_events: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-versions-"))
    old_sql, old_version = fold_module.ROLLUP_SQL["traffic_daily"], fold_module.VERSIONS["traffic_daily"]
    try:
        client = connect(f"chdb://{work / 'clickhouse'}")
        migrate(client)
        first_day, today = load_history(client, n_events)
        started = time.perf_counter()
        full = fold(client)
        fold_all_s = time.perf_counter() - started
        before = _views(client, today, first_day)

        fold_module.ROLLUP_SQL["traffic_daily"] = old_sql.replace(OLD_BOUNCES, NEW_BOUNCES)
        fold_module.VERSIONS["traffic_daily"] = old_version + 1
        started = time.perf_counter()
        half = fold(client, backfill_days=DAYS // 2)
        half_s = time.perf_counter() - started
        during = _views(client, today, first_day)
        started = time.perf_counter()
        rest = fold(client, backfill_days=None)
        rest_s = time.perf_counter() - started
        after = _views(client, today, first_day)
        client.close()
        assert half is not None and rest is not None and rest.switched == ("traffic_daily",)
        views = {}
        for name, b in before.items():
            d, a = during[name], after[name]
            views[name] = {
                "before_median_ms": b["median_ms"], "during_median_ms": d["median_ms"],
                "after_median_ms": a["median_ms"], "before_p95_ms": b["p95_ms"], "during_p95_ms": d["p95_ms"],
                "after_p95_ms": a["p95_ms"], "read_rows": [b["read_rows"], d["read_rows"], a["read_rows"]],
                "during_equals_before": d["rows"] == b["rows"],
                "after_equals_before": a["rows"] == b["rows"],
            }
        return {"events": n_events, "fold_all_days_s": round(fold_all_s, 1),
                "fold_all_days": len(full.days) if full else None,
                "build_first_run_s": round(half_s, 1), "build_first_run_days": len(half.backfilled),
                "build_rest_s": round(rest_s, 1), "build_rest_days": len(rest.backfilled), "views": views}
    finally:
        fold_module.ROLLUP_SQL["traffic_daily"], fold_module.VERSIONS["traffic_daily"] = old_sql, old_version
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: tuple[int, ...] = (1_000_000,)) -> dict[str, Any]:
    results = {"benchmark": "rollup_versions", "engine": "chDB (embedded ClickHouse)", "cpus": os.cpu_count(),
               "site": SITE, "days": DAYS, "sizes": [run_size(n) for n in sizes]}
    return write_result("rollup_versions", results)


if __name__ == "__main__":
    run(tuple(int(a) for a in sys.argv[1:]) or (1_000_000,))
