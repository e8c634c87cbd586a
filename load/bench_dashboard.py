"""First render of the built-in dashboard (`GET /dashboard`) in headless Chromium, at N events: the
panel queries of reports/dashboard/queries.py against the baseline (load/dashboard_baseline.py, the
queries before they read the roll-ups), side by side on the same server and data.

Method: N synthetic events generated inside ClickHouse as in load/bench_views.py (`events_ingest`,
so the real materialized views run; sessions of 6 events, visitors of 3 sessions over ~2.3 days, 7
channels, one experiment, 0.5 % of visitors with a lead) for site SITE, in a child process; then a
real `clickstream serve` on that data directory (folded before: the roll-ups of every day) with the
query port on (default caps: 2 query slots, max_threads 1), and Debian's Chromium (Playwright)
opening `/dashboard?site=…&range=7d&funnel=/,/pricing,cta_click` (HTTP Basic): what a browser does on
load, every panel of the default view (sites, totals, traffic, sources by channel, top pages, custom
events and property keys, funnel, experiments, latest leads, live). The variant under test gets the
catalog the server serves; the baseline gets the baseline catalog (Playwright answers the page's
`GET /dashboard/api/queries` with it), nothing else differs. Measured in the browser: milliseconds
from navigation start until every panel but the funnel is drawn (`body[data-drawn=1]`: the first render;
the page asks for the funnel, the one query over every event of the range, after the others) and until
the funnel is drawn too (`body[data-ready=1]`), as the page records them; 1 warm-up each, then RUNS
runs alternating baseline and current (median), and per query the median and slowest duration
(Resource Timing of each `POST /`, named by its `query_id`; `experiments` is the page's
`GET /dashboard/api/experiments`). Every panel's rows are compared between the two variants (the
same numbers, or the run is marked `answers_equal: false`).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from load import dashboard_baseline
from load.procs import cpu_seconds, start
from load.results import write_result

SITE = "bench.example"
PASSWORD = "bench-dashboard"
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
RUNS = 5
VARIANTS = ("baseline", "current")

_FILL = """
import sys, time
from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from load.bench_views import GENERATE, LEADS
from reports.fold import fold
path, n, site = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = connect("chdb://" + path)
migrate(client)
now_ms = int(time.time() * 1000) - 3_600_000
for start in range(0, n, 1_000_000):
    client.command(GENERATE.format(site=site, now_ms=now_ms, start=start, count=min(1_000_000, n - start)),
                   settings={"async_insert": 0})
client.command(LEADS.format(site=site), settings=INSERT_SETTINGS)
fold(client)  # the roll-ups of every day, before serve starts (its own first fold then has nothing to do)
client.close()
"""

#: What the page drew, to compare the variants: every table's cells and the totals/funnel/live values.
_DRAWN = """() => {
  const out = {};
  for (const t of document.querySelectorAll('#panels table')) {
    out[t.id] = [...t.querySelectorAll('tr')].map(r => [...r.children].map(c => c.textContent.trim()).join('|'));
  }
  out.totals = document.getElementById('totals').innerText;
  out.live = document.getElementById('live-visitors').textContent;
  return out;
}"""


def fill(data_dir: Path, n_events: int) -> float:
    """Generate the events and fold them (the roll-ups) in a child process (chDB holds a directory per
    process); seconds taken."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _FILL, str(data_dir / "clickhouse"), str(n_events), SITE], check=True,
                   timeout=3600)
    return time.perf_counter() - started


def _query_name(url: str) -> str | None:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    if parts.path.endswith("/dashboard/api/experiments"):
        return "experiments"
    query_id = parse_qs(parts.query).get("query_id", [""])[0]
    if not query_id.startswith("dashboard-"):
        return None
    return query_id.removeprefix("dashboard-").rsplit("-", 1)[0]


def measure(sql_url: str) -> dict[str, Any]:
    """Per variant: median first render (ms) over RUNS fresh pages after a warm-up (its own first render
    reported too: the port has not seen the variant's query texts yet), per query the
    median and slowest time, the panels that showed an error (a render with errors still counts as
    drawn), and whether both variants drew the same numbers."""
    from playwright.sync_api import Route, sync_playwright

    url = f"{sql_url}/dashboard?auth=basic&site={SITE}&range=7d&funnel=/,/pricing,cta_click&window=1800"
    baseline_catalog = json.dumps(dashboard_baseline.catalog())
    renders: dict[str, list[float]] = {v: [] for v in VARIANTS}
    firsts: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cold: dict[str, float] = {}
    per_query: dict[str, dict[str, list[float]]] = {v: {} for v in VARIANTS}
    failed: dict[str, set[str]] = {v: set() for v in VARIANTS}
    drawn: dict[str, Any] = {}

    def serve_baseline(route: Route) -> None:
        route.fulfill(status=200, content_type="application/json", body=baseline_catalog,
                      headers={"Cache-Control": "no-store"})

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        try:
            for run in range(RUNS + 1):
                for variant in VARIANTS:
                    context = browser.new_context(http_credentials={"username": "dashboards", "password": PASSWORD},
                                                  viewport={"width": 1280, "height": 800})
                    if variant == "baseline":
                        context.route("**/dashboard/api/queries", serve_baseline)
                    page = context.new_page()
                    page.goto(url)
                    page.wait_for_selector("body[data-ready='1']", timeout=900_000)
                    marks = page.evaluate("[document.body.dataset.drawnMs, document.body.dataset.readyMs]")
                    drawn_ms, elapsed = float(marks[0]), float(marks[1])
                    if page.is_visible("#empty"):
                        raise RuntimeError(f"the page shows its empty state: {SITE} has no roll-up rows")
                    errors = page.eval_on_selector_all("[data-error]", "n => n.map(x => x.id + ': ' + x.dataset.error)")
                    failed[variant].update(str(e)[:300] for e in errors)
                    timings = page.evaluate(
                        "performance.getEntriesByType('resource').map(e => [e.name, e.duration])")
                    if run == 0:
                        drawn[variant] = page.evaluate(_DRAWN)
                    context.close()
                    if run == 0:
                        cold[variant] = drawn_ms
                        continue  # warm-up: the engine's caches, the port's guard verdicts, the browser's files
                    renders[variant].append(elapsed)
                    firsts[variant].append(drawn_ms)
                    for resource, duration in timings:
                        name = _query_name(str(resource))
                        if name:
                            per_query[variant].setdefault(name, []).append(float(duration))
        finally:
            browser.close()
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        queries = {name: {"median_ms": round(statistics.median(d)), "max_ms": round(max(d))}
                   for name, d in sorted(per_query[variant].items(), key=lambda kv: -statistics.median(kv[1]))}
        out[variant] = {"first_render_ms": round(statistics.median(firsts[variant])),
                        "warm_up_first_render_ms": round(cold[variant]),
                        "runs_ms": [round(r) for r in firsts[variant]],
                        "with_funnel_ms": round(statistics.median(renders[variant])),
                        "with_funnel_runs_ms": [round(r) for r in renders[variant]], "queries": queries,
                        "failed_panels": sorted(failed[variant])}
    out["speedup"] = round(out["baseline"]["first_render_ms"] / out["current"]["first_render_ms"], 2)
    out["speedup_with_funnel"] = round(out["baseline"]["with_funnel_ms"] / out["current"]["with_funnel_ms"], 2)
    out["answers_equal"] = drawn.get("baseline") == drawn.get("current")
    if not out["answers_equal"]:
        out["drawn"] = drawn
    return out


def _wait_for_site(sql_url: str, timeout_s: float = 1800) -> None:
    """Until the site picker lists SITE (the roll-ups are there): else the page shows its empty state."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = httpx.post(sql_url + "/", params={"default_format": "JSONEachRow"}, auth=("dashboards", PASSWORD),
                            content=b"SELECT site_id FROM v_daily_traffic GROUP BY site_id", timeout=600)
        if answer.status_code == 200 and SITE in answer.text:
            return
        time.sleep(1)
    raise RuntimeError(f"{SITE} never showed in v_daily_traffic")


def _wait_for_quiet(pid: int, timeout_s: float = 1800, below: float = 0.2) -> float:
    """Until process `pid` has used less than `below` of a core in each of three 5 s windows in a row:
    the steady state. A fresh server on freshly loaded parts first merges them on both cores (~1 min
    at 10 M events), which is not what a dashboard meets on an install that has held its events a
    while. Returns the seconds waited."""
    started = time.monotonic()
    quiet, last = 0, cpu_seconds(pid)
    while quiet < 3:
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"serve still busy after {timeout_s} s")
        time.sleep(5)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if (now - last) / 5 < below else 0
        last = now
    return time.monotonic() - started


def run_size(n_events: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        data_dir = work / "data"
        data_dir.mkdir()
        load_s = fill(data_dir, n_events)
        started = time.perf_counter()
        server = start("serve", data_dir, {"CLICKSTREAM_SQL_PASSWORD": PASSWORD}, ready_path="/readyz", timeout=1800)
        ready_s = time.perf_counter() - started
        try:
            _wait_for_site(server.sql_url)
            quiet_s = _wait_for_quiet(server.proc.pid)
            result = measure(server.sql_url)
        finally:
            server.stop()
        return {"events": n_events, "load_s": round(load_s, 1), "serve_ready_s": round(ready_s, 1),
                "merges_settled_s": round(quiet_s, 1), **result}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(sizes: tuple[int, ...] = (1_000_000, 10_000_000)) -> dict[str, Any]:
    """First render at each size, baseline queries and current ones side by side (`speedup` =
    baseline ÷ current first render)."""
    results = [run_size(n) for n in sizes]
    return write_result("dashboard", {"benchmark": "dashboard_first_render", "cpus": os.cpu_count(),
                                      "command": "python -m load.bench dashboard", "sizes": results},
                        hidden=())


if __name__ == "__main__":
    run(tuple(int(a) for a in sys.argv[1:]) or (1_000_000, 10_000_000))
