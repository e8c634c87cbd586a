"""Pipeline benchmarks over HTTP: freshness at a steady rate, and peak RSS after 1 M events.

freshness: `clickstream serve` on embedded ClickHouse in the steady state (its ClickHouse already
holds `prefill_events`, 10 M by default, so the flusher starts with a full dedup memory and merges
run on real parts); for each rate (200, 2,000, 20,000 events/s) an open-loop aiohttp sender offers
`rate` events/s in requests of at most 100 events for `duration_s`; the first event of each
request is a probe page view with its own session id. A poller asks the query port every 25 ms which
probe sessions `sessions` holds, and every second how many active parts `events`, `sessions` and
`variant_exposures` have. Freshness of a probe = time it became visible - time its 202 arrived
(resolution 25 ms). Reported per rate: p50, p99, max, achieved rate, inserts per second (from the
flusher's batch counter) and active parts (max); targets p99 <= 1 s at 2,000 events/s and <= 2 s
at 20,000 events/s with active parts bounded.

rss: `clickstream collector` and `clickstream flusher` as separate processes on one data
directory; 1 M events sent in 50-event batches as fast as 16 concurrent requests go; when the
flusher has drained the spool, each process's VmHWM (peak resident set size) is read from /proc.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from load.procs import start
from load.results import RESULTS, write_result

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
SITE = "fresh.example"
SQL_PASSWORD = "bench-sql"


def _event(session_id: str, now_ms: int, i: int) -> dict[str, Any]:
    return {"type": "page_view", "site_id": SITE, "anonymous_id": f"a-{session_id}", "session_id": session_id,
            "ts": now_ms, "url": f"https://{SITE}/p{i % 7}?utm_source=google&utm_medium=cpc",
            "event_id": str(uuid.uuid4())}


PARTS_SQL = ("SELECT table, count() FROM system.parts WHERE database = currentDatabase() AND active "
             "AND table IN ('events', 'sessions', 'variant_exposures') GROUP BY table FORMAT JSONCompact")


async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def _freshness(url: str, sql_url: str, rate: int, duration_s: float, probes_per_s: int) -> dict[str, Any]:
    per_request = max(1, rate // probes_per_s)
    parts: dict[str, int] = {}
    accepted: dict[str, float] = {}
    visible: dict[str, float] = {}
    timeline: list[tuple[float, float]] = []  # (t, freshness of a probe that became visible then)
    acks: list[tuple[float, int]] = []  # (t, events acknowledged by one 202)
    acked = 0
    done = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def send(n: int) -> None:
            nonlocal acked
            now = int(time.time() * 1000)
            probe = f"probe-{rate}-{n}"
            batch = [_event(probe, now, 0)] + [_event(f"bg-{rate}-{n}-{k % 5}", now, k)
                                               for k in range(per_request - 1)]
            async with http.post(f"{url}/collect", data=orjson.dumps(batch),
                                 headers={"Content-Type": "text/plain", "User-Agent": UA}) as response:
                await response.read()
                if response.status == 202:
                    accepted[probe] = time.perf_counter()
                    acked += len(batch)
                    acks.append((accepted[probe] - started, len(batch)))

        async def poll() -> None:
            auth = aiohttp.BasicAuth("dashboards", SQL_PASSWORD)
            last_parts = 0.0
            while not (done.is_set() and set(accepted) <= set(visible)):
                if time.perf_counter() - last_parts >= 1.0:
                    last_parts = time.perf_counter()
                    async with http.post(f"{sql_url}/", data=PARTS_SQL.encode(), auth=auth) as response:
                        for table, n in orjson.loads(await response.read()).get("data", []):
                            parts[table] = max(parts.get(table, 0), int(n))
                pending = [p for p in accepted if p not in visible]
                if pending:
                    sql = ("SELECT DISTINCT session_id FROM sessions WHERE site_id = '" + SITE +
                           "' AND session_id IN (" + ",".join(f"'{p}'" for p in pending) + ") FORMAT JSONCompact")
                    async with http.post(f"{sql_url}/", data=sql.encode(), auth=auth) as response:
                        body = orjson.loads(await response.read())
                    seen_at = time.perf_counter()
                    for (session_id,) in body.get("data", []):
                        if session_id not in visible:
                            visible[session_id] = seen_at
                            timeline.append((seen_at - started, seen_at - accepted[session_id]))
                await asyncio.sleep(0.025)

        batches_before = await _metric(http, url, "clickstream_flusher_batches_total")
        started = time.perf_counter()
        poller = asyncio.create_task(poll())
        tasks = []
        n = 0
        while time.perf_counter() - started < duration_s:
            due = started + n / probes_per_s
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(send(n)))
            n += 1
        await asyncio.gather(*tasks)
        sent_s = time.perf_counter() - started
        done.set()
        try:
            await asyncio.wait_for(poller, timeout=60)
        except TimeoutError:
            poller.cancel()
        inserts = await _metric(http, url, "clickstream_flusher_batches_total") - batches_before
        total_s = time.perf_counter() - started
    lags = sorted(visible[p] - accepted[p] for p in visible)
    return {"offered_rate": rate, "achieved_rate": round(acked / sent_s), "probes": len(accepted),
            "visible": len(visible), "p50_s": round(statistics.median(lags), 3),
            "p99_s": round(lags[min(len(lags) - 1, int(0.99 * len(lags)))], 3), "max_s": round(lags[-1], 3),
            "inserts_per_s": round(inserts / total_s, 2), "active_parts_max": parts,
            "timeline": timeline, "acks": acks}


def run_freshness(rates: tuple[int, ...] = (200, 2000, 20000), duration_s: float = 30.0,
                  prefill_events: int = 10_000_000) -> dict[str, Any]:
    from clickstream.core.clickhouse import connect, migrate
    from load.bench_flusher import prefill
    from reports.fold import fold

    work = Path(tempfile.mkdtemp(prefix="bench-fresh-"))
    runs: list[dict[str, Any]] = []
    try:
        client = connect(f"chdb://{(work / 'data' / 'clickhouse').resolve()}")
        migrate(client)
        prefill(client, prefill_events)
        started = time.perf_counter()
        fold(client)  # the roll-ups of the prefill, as the flusher benchmark does: serve starts in the steady state
        fold_backfill_s = time.perf_counter() - started
        client.close()
        server = start("serve", work / "data", {"CLICKSTREAM_SQL_PASSWORD": SQL_PASSWORD}, ready_path="/readyz",
                       timeout=600)
        try:
            for rate in rates:
                probes_per_s = max(20, -(-rate // 100))  # requests of at most 100 events (the default limit)
                runs.append(asyncio.run(_freshness(server.url, server.sql_url, rate, duration_s, probes_per_s)))
        finally:
            exit_code = server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for run in runs:
        _plot(run)
    result = {"benchmark": "freshness", "prefill_events": prefill_events, "duration_s": duration_s,
              "fold_backfill_s": round(fold_backfill_s, 1),
              "exit_code": exit_code, "runs": [{k: v for k, v in r.items() if k not in ("timeline", "acks")}
                                               for r in runs],
              "tool": "aiohttp open-loop sender + query port poller (load/bench_pipeline.py)"}
    return write_result("freshness", result)


async def _blast(url: str, n_events: int, batch: int, concurrency: int) -> float:
    now = int(time.time() * 1000)
    body_events = [_event(f"rss-{k // 6}", now, k) for k in range(batch)]
    queue = list(range(0, n_events, batch))
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            while queue:
                queue.pop()
                for event in body_events:
                    event["event_id"] = str(uuid.uuid4())
                body = orjson.dumps(body_events)
                while True:
                    async with http.post(f"{url}/collect", data=body,
                                         headers={"Content-Type": "application/json", "User-Agent": UA}) as r:
                        await r.read()
                        if r.status == 202:
                            break
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def run_rss(n_events: int = 1_000_000, batch: int = 50, concurrency: int = 16) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    try:
        data = work / "data"
        collector = start("collector", data)
        flusher = start("flusher", data)
        try:
            elapsed = asyncio.run(_blast(collector.url, n_events, batch, concurrency))
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                spooled = [p for p in (data / "spool").glob("*") if p.suffix in (".seg", ".open")]
                if not spooled:
                    break
                time.sleep(0.5)
            result = {"benchmark": "peak_rss", "events": n_events, "send_s": round(elapsed, 1),
                      "collector_events_per_s": round(n_events / elapsed),
                      "collector_peak_rss_mib": round(collector.peak_rss_bytes() / 2**20, 1),
                      "flusher_peak_rss_mib": round(flusher.peak_rss_bytes() / 2**20, 1),
                      "flusher_includes": "embedded ClickHouse (chDB) engine",
                      "tool": "aiohttp, 50-event batches, 16 concurrent requests"}
        finally:
            collector.stop()
            flusher.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return write_result("rss", result)


def _plot(result: dict[str, Any]) -> None:
    """load/results/freshness.png: events acknowledged per second and probe freshness over the run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is a convenience of `make bench`; the numbers are in the JSON
        return
    timeline = sorted(result["timeline"])
    if len(timeline) < 2:
        return
    per_second: dict[int, int] = {}
    for t_ack, n in result["acks"]:
        per_second[int(t_ack)] = per_second.get(int(t_ack), 0) + n
    seconds = sorted(per_second)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    top.step(seconds, [per_second[s] for s in seconds], where="post")
    top.set_ylabel("events/s acknowledged")
    top.set_title(f"clickstream serve at {result['offered_rate']} events/s offered ({os.cpu_count()} cores)")
    bottom.plot([p[0] for p in timeline], [p[1] for p in timeline], ".", ms=3)
    bottom.set_ylabel("freshness (s)")
    bottom.set_xlabel("seconds into the run")
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / f"freshness-{result['offered_rate']}.png", dpi=100)


if __name__ == "__main__":
    import sys
    from collections.abc import Callable

    benchmarks: dict[str, Callable[[], dict[str, Any]]] = {"freshness": run_freshness, "rss": run_rss}
    benchmarks[sys.argv[1] if len(sys.argv) > 1 else "freshness"]()
