"""`serve --workers N`: acknowledged events/s for N = 1 and 2 collector processes, side by side,
with an exact audit of the totals.

For each round and each N (alternating, a fresh data directory each time): `clickstream serve
--workers N` (embedded ClickHouse, defaults), then `wrk -t2 -c64 -d10s -s load/wrk/post.lua` with
`UNIQUE_EVENTS=B` (every request a fresh batch of B page views with new event ids; B = 1, the common
beacon request, and B = 50; wrk shares the machine's cores with the server, no pinning). After wrk
stops: the time until ClickHouse holds every acknowledged event (the flusher catching up), then the
audit of the totals: `count()` = `uniqExact(event_id)` (0 duplicated) = `sum(events)` of `sessions`
(the materialized view exact), and between B × the 202 answers wrk counted (0 lost) and that plus
the requests still in flight when wrk stopped (≤ 64 connections × B: acknowledged by the server,
never counted by wrk). `clickstream load` gives the event-by-event audit (tests/integration/test_workers.py).

`python -m load.bench workers`; `BENCH_ROUNDS` (default 2) rounds, `BENCH_BATCHES` (default `1,50`).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from load.bench_collector import CONNECTIONS, machine, wrk
from load.procs import start
from load.results import write_result

BATCHES = tuple(int(b) for b in os.environ.get("BENCH_BATCHES", "1,50").split(","))
DURATION_S = 10
SQL_PASSWORD = "bench-sql"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def _sql(sql_url: str, query: str) -> list[list[Any]]:
    """Rows of one query through serve's query port (JSONCompact)."""
    answer = httpx.post(sql_url, content=query + " FORMAT JSONCompact", auth=("dashboards", SQL_PASSWORD),
                        timeout=120)
    answer.raise_for_status()
    rows: list[list[Any]] = answer.json()["data"]
    return rows


def measure(workers: int, batch: int, work: Path) -> dict[str, Any]:
    server = start("serve", work / f"data-{workers}-{time.monotonic_ns()}",
                   {"CLICKSTREAM_WORKERS": str(workers), "CLICKSTREAM_SQL_PASSWORD": SQL_PASSWORD},
                   ready_path="/readyz", timeout=120)
    try:
        result = wrk(server.url + "/collect", None, DURATION_S, cpu=None, threads=2, unique_events=batch)
        stopped = time.monotonic()
        acknowledged = (result["requests"] - result["errors"]["non_2xx"]) * batch
        while True:
            count, unique = _sql(server.sql_url, "SELECT count(), uniqExact(event_id) FROM events")[0]
            if int(count) >= acknowledged or time.monotonic() - stopped > 300:
                break
            time.sleep(0.1)
        caught_up_s = time.monotonic() - stopped
        sessions_events = int(_sql(server.sql_url, "SELECT sum(events) FROM sessions")[0][0])
        in_flight = CONNECTIONS * batch
        clean = (int(count) == int(unique) == sessions_events and acknowledged <= int(count) <= acknowledged + in_flight
                 and not any(result["errors"].values()))
        return {"workers": workers, "batch": batch, "events_per_s": round(acknowledged / (result["duration_us"] / 1e6)),
                "requests_per_s": result["req_per_s"], "acknowledged": acknowledged, "in_clickhouse": int(count),
                "unique": int(unique), "sessions_events": sessions_events, "flushed_after_s": round(caught_up_s, 1),
                "p99_ms": round(result["latency_us"]["p99"] / 1000, 1), "errors": result["errors"],
                "audit_clean": clean, "command": result["command"]}
    finally:
        server.stop()


def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    runs = [measure(n, batch, work) for batch in BATCHES for _ in range(ROUNDS) for n in (1, 2)]
    summary = {}
    for batch in BATCHES:
        med = {n: statistics.median(r["events_per_s"] for r in runs if r["batch"] == batch and r["workers"] == n)
               for n in (1, 2)}
        summary[f"batch_{batch}"] = {"median_events_per_s_1": med[1], "median_events_per_s_2": med[2],
                                     "ratio_2_to_1": round(med[2] / med[1], 2)}
    result = {"benchmark": "workers", "machine": machine(), "runs": runs, "summary": summary,
              "all_audits_clean": all(r["audit_clean"] for r in runs)}
    return write_result("workers", result)


if __name__ == "__main__":
    run()
