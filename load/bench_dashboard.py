"""First render of the built-in dashboard (`GET /dashboard`) in headless Chromium, at N events.

Method: N synthetic events generated inside ClickHouse as in load/bench_views.py (`events_ingest`,
so the real materialized views run; sessions of 6 events, visitors of 3 sessions over ~2.3 days, 7
channels, one experiment, 0.5 % of visitors with a lead), in a child process; then a real
`clickstream serve` on that data directory with the query port on (default caps: 2 query slots,
max_threads 1), and Debian's Chromium (Playwright) opening
`/dashboard?site=…&range=7d&funnel=/,/pricing,cta_click` (HTTP Basic). Measured in the browser:
milliseconds from navigation start until every panel is drawn (`body[data-ready=1]`), 1 warm-up
then 3 runs (median), and per query the slowest duration seen (Resource Timing of each `POST /`,
named by its `query_id`). The baseline, in the same run, is the same page at the smallest size.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load.procs import start
from load.results import write_result

SITE = "bench.example"
PASSWORD = "bench-dashboard"
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
RUNS = 3

_FILL = """
import sys, time
from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from load.bench_views import GENERATE, LEADS, SITE
path, n = sys.argv[1], int(sys.argv[2])
client = connect("chdb://" + path)
migrate(client)
now_ms = int(time.time() * 1000) - 3_600_000
for start in range(0, n, 1_000_000):
    client.command(GENERATE.format(site=SITE, now_ms=now_ms, start=start, count=min(1_000_000, n - start)),
                   settings={"async_insert": 0})
client.command(LEADS.format(site=SITE), settings=INSERT_SETTINGS)
client.close()
"""


def fill(data_dir: Path, n_events: int) -> float:
    """Generate the events in a child process (chDB holds a directory per process); seconds taken."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _FILL, str(data_dir / "clickhouse"), str(n_events)], check=True,
                   timeout=3600)
    return time.perf_counter() - started


def measure(sql_url: str) -> dict[str, Any]:
    """Median first render (ms) over RUNS fresh pages after a warm-up, the slowest time per query, and
    the panels that showed an error instead of numbers (a render with errors still counts as drawn)."""
    from playwright.sync_api import sync_playwright

    url = f"{sql_url}/dashboard?auth=basic&site={SITE}&range=7d&funnel=/,/pricing,cta_click&window=1800"
    renders: list[float] = []
    per_query: dict[str, float] = {}
    failed: set[str] = set()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            for run in range(RUNS + 1):
                context = browser.new_context(http_credentials={"username": "dashboards", "password": PASSWORD},
                                              viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.goto(url)
                page.wait_for_selector("body[data-ready='1']", timeout=600_000)
                elapsed = float(page.evaluate("performance.now()"))
                errors = page.eval_on_selector_all("[data-error]", "n => n.map(x => x.id + ': ' + x.dataset.error)")
                failed.update(str(e)[:300] for e in errors)
                timings = page.evaluate(
                    "performance.getEntriesByType('resource').filter(e => e.name.includes('query_id=dashboard-'))"
                    ".map(e => [new URL(e.name).searchParams.get('query_id'), e.duration])")
                context.close()
                if run == 0:
                    continue  # warm-up: the engine's caches and the browser's files
                renders.append(elapsed)
                for query_id, duration in timings:
                    name = str(query_id).removeprefix("dashboard-").rsplit("-", 1)[0]
                    per_query[name] = max(per_query.get(name, 0.0), float(duration))
        finally:
            browser.close()
    return {"first_render_ms": round(statistics.median(renders)), "runs_ms": [round(r) for r in renders],
            "slowest_query_ms": {k: round(v) for k, v in sorted(per_query.items(), key=lambda kv: -kv[1])},
            "failed_panels": sorted(failed)}


def run_size(n_events: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        data_dir = work / "data"
        data_dir.mkdir()
        load_s = fill(data_dir, n_events)
        server = start("serve", data_dir, {"CLICKSTREAM_SQL_PASSWORD": PASSWORD}, ready_path="/readyz", timeout=600)
        try:
            result = measure(server.sql_url)
        finally:
            server.stop()
        return {"events": n_events, "load_s": round(load_s, 1), **result}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: tuple[int, ...] = (100_000, 1_000_000, 10_000_000)) -> dict[str, Any]:
    """First render at each size; `ratio_to_baseline` = render time / the smallest size's."""
    results = [run_size(n) for n in sizes]
    for entry in results:
        entry["ratio_to_baseline"] = round(entry["first_render_ms"] / results[0]["first_render_ms"], 2)
    return write_result("dashboard", {"benchmark": "dashboard_first_render", "cpus": os.cpu_count(),
                                      "command": "python -m load.bench dashboard", "sizes": results})


if __name__ == "__main__":
    run(tuple(int(a) for a in sys.argv[1:]) or (100_000, 1_000_000, 10_000_000))
