"""The collector's latency while dashboards query the same `serve` through the query port.

Method: a data directory prefilled with N synthetic events (load/bench_views.py's generator, so the
materialized views run; in a child process, which then releases the directory), then for each
scenario a fresh `clickstream serve` on it with that scenario's CLICKSTREAM_SQL_* caps, 5 s of warm-up
(dashboards already querying), then the measurement. An open-loop
aiohttp sender offers `rate` events/s to POST /collect in batches of `batch` for `duration_s` and
records each request's latency (the collector's p50/p99/max as a client sees it); meanwhile
`clients` dashboard clients repeat the heaviest view query (v_channels over all data, BENCHMARKS.md
"Dashboard views") through the query port, back to back. Scenarios run in `rounds` interleaved
rounds (baseline first in each), so background load on this shared 2-core machine hits every
scenario alike; the table reports medians over rounds and each p99's ratio to the round's baseline.

    python -m load.bench query_port          (or: python -m load.bench_query_port [events] [rounds])
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from load.bench_views import GENERATE, LEADS, SITE
from load.procs import start
from load.results import write_result

PASSWORD = "bench-sql"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
HEAVY = "SELECT * FROM v_channels ORDER BY sessions DESC FORMAT JSON"
WARM_UP_S = 5.0

#: name -> (dashboard clients, CLICKSTREAM_SQL_* of serve)
SCENARIOS: dict[str, tuple[int, dict[str, str]]] = {
    "no dashboard": (0, {}),
    "1 client, defaults (2 slots, 1 thread)": (1, {}),
    "4 clients, defaults (2 slots + queue, 1 thread)": (4, {}),
    "4 clients, 4 slots, 1 thread": (4, {"CLICKSTREAM_SQL_MAX_CONCURRENT_QUERIES": "4"}),
    "4 clients, 4 slots, 2 threads": (4, {"CLICKSTREAM_SQL_MAX_CONCURRENT_QUERIES": "4",
                                          "CLICKSTREAM_SQL_MAX_THREADS": "2"}),
}


def prefill(clickhouse_dir: Path, n_events: int) -> None:
    """N synthetic events (+ leads) into a fresh embedded ClickHouse at `clickhouse_dir`."""
    client = connect(f"chdb://{clickhouse_dir}")
    migrate(client)
    now_ms = int(time.time() * 1000)
    for first in range(0, n_events, 1_000_000):
        client.command(GENERATE.format(site=SITE, now_ms=now_ms, start=first, count=min(1_000_000, n_events - first)),
                       settings={"async_insert": 0})
    client.command(LEADS.format(site=SITE), settings=INSERT_SETTINGS)
    client.close()


def _batch(n: int, size: int) -> bytes:
    now = int(time.time() * 1000)
    return orjson.dumps([{"type": "page_view", "site_id": "live.example", "anonymous_id": f"a{n % 997}",
                          "session_id": f"s{n}", "ts": now, "url": f"https://live.example/p{k % 5}",
                          "event_id": str(uuid.uuid4())} for k in range(size)])


async def _collect(url: str, rate: int, batch: int, duration_s: float) -> dict[str, Any]:
    """Open loop: `rate / batch` requests a second, each timed from send to answer."""
    per_s = rate / batch
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http:

        async def one(n: int) -> None:
            body = _batch(n, batch)
            sent = time.perf_counter()
            async with http.post(f"{url}/collect", data=body,
                                 headers={"Content-Type": "application/json", "User-Agent": UA}) as response:
                await response.read()
                latencies.append(time.perf_counter() - sent)
                statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        tasks, n = [], 0
        while time.perf_counter() - started < duration_s:
            await asyncio.sleep(max(0.0, started + n / per_s - time.perf_counter()))
            tasks.append(asyncio.create_task(one(n)))
            n += 1
        await asyncio.gather(*tasks)
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"requests": len(ordered), "statuses": statuses, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": pct(1.0)}


def _dashboards(sql_url: str, clients: int, stop: threading.Event) -> dict[str, Any]:
    durations: list[float] = []
    refused: list[int] = []

    def loop() -> None:
        with httpx.Client(auth=("dashboards", PASSWORD), timeout=300) as http:
            while not stop.is_set():
                sent = time.perf_counter()
                status = http.post(sql_url, content=HEAVY).status_code
                if status == 200:
                    durations.append(time.perf_counter() - sent)
                else:
                    refused.append(status)
                    time.sleep(1)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return {"threads": threads, "durations": durations, "refused": refused}


def run_scenario(data_dir: Path, name: str, rate: int, batch: int, duration_s: float) -> dict[str, Any]:
    clients, env = SCENARIOS[name]
    server = start("serve", data_dir, {"CLICKSTREAM_SQL_PASSWORD": PASSWORD, **env}, ready_path="/readyz",
                   timeout=300)
    try:
        stop = threading.Event()
        dash = _dashboards(server.sql_url, clients, stop)
        time.sleep(WARM_UP_S)  # serve's start-up work (merges of the prefilled parts) and dashboards under way
        try:
            result = asyncio.run(_collect(server.url, rate, batch, duration_s))
        except aiohttp.ClientError:
            time.sleep(1)
            print(f"scenario {name!r}: serve failed (exit code {server.proc.poll()}); its log ends:\n"
                  f"{server.log()[-4000:]}", file=sys.stderr)
            raise
        finally:
            stop.set()
        for thread in dash["threads"]:
            thread.join()
        queries = dash["durations"]
        result.update(dashboard_queries=len(queries), dashboard_refused=len(dash["refused"]),
                      dashboard_mean_s=round(statistics.mean(queries), 3) if queries else None)
    finally:
        result_exit = server.stop()
    result["exit_code"] = result_exit
    return result


def run(n_events: int = 2_000_000, rounds: int = 2, rate: int = 2000, batch: int = 20,
        duration_s: float = 20.0) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-query-port-"))
    try:
        data_dir = work / "data"
        data_dir.mkdir()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "load.bench_query_port", "--prefill", str(data_dir / "clickhouse"),
                        str(n_events)], check=True)
        prefill_s = time.perf_counter() - started
        per_round: list[dict[str, dict[str, Any]]] = []
        for _ in range(rounds):
            per_round.append({name: run_scenario(data_dir, name, rate, batch, duration_s) for name in SCENARIOS})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline = next(iter(SCENARIOS))
    summary = {}
    for name in SCENARIOS:
        runs = [r[name] for r in per_round]
        summary[name] = {
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "p99_ratio_to_baseline": round(statistics.median(r[name]["p99_ms"] / r[baseline]["p99_ms"]
                                                             for r in per_round), 2),
            "non_202": sum(n for r in runs for s, n in r["statuses"].items() if s != 202),
            "dashboard_queries_per_run": statistics.median(r["dashboard_queries"] for r in runs),
            "dashboard_mean_s": statistics.median(r["dashboard_mean_s"] or 0 for r in runs),
            "dashboard_refused": sum(r["dashboard_refused"] for r in runs),
        }
    result = {"benchmark": "query_port", "events_prefilled": n_events, "prefill_s": round(prefill_s, 1),
              "offered_events_per_s": rate, "batch": batch, "duration_s": duration_s, "rounds": rounds,
              "heavy_query": HEAVY, "summary": summary, "runs": per_round}
    print(_table(summary))
    return write_result("query_port", result, hidden=("runs",))


def _table(summary: dict[str, dict[str, Any]]) -> str:
    lines = ["| scenario | collector p50 / p99 ms | p99 ÷ no dashboard | non-202 | heavy queries per run "
             "(mean s) | refused |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['p50_ms']} / {s['p99_ms']} | {s['p99_ratio_to_baseline']} | {s['non_202']} | "
                     f"{s['dashboard_queries_per_run']} ({s['dashboard_mean_s']}) | {s['dashboard_refused']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--prefill"]:
        prefill(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        run(*(int(a) for a in sys.argv[1:3]))
