"""Benchmark of `POST /collect` against a bare Starlette endpoint, driven by wrk.

Both servers run in the same run with the same uvicorn settings (`clickstream.runner.run_uvicorn`:
uvloop, httptools, no access log, one worker), pinned to CPU 0 with `taskset -c 0`; wrk is pinned
to CPU 1: `taskset -c 1 wrk -t1 -c64 -d10s -s load/wrk/post.lua URL` with the body in `BODY_FILE`.
Payloads are generated at start with a fresh `ts` (the clock policy rejects events > 72 h old):
one realistic beacon event, and a batch of 50. The collector keeps its default spool policy
(group commit, fsync every 20 ms); its quota is raised to 64 GiB and, as the flusher would, sealed
segments are deleted after each measurement, so a long run never hits 503. Each measurement is
preceded by a 2 s warm-up. Measurements are paired and interleaved (per round: bare then
collector, single then batch; `BENCH_ROUNDS` rounds, default 3) so a change of background load
hits both sides of a ratio; the summary is the median over rounds of each number and of each
round's ratio. Each run also records the server's CPU time per request (user + system, all
threads, from /proc/<pid>/stat): unlike requests/s it barely moves when other processes share
the core, so `cpu_ratio` (bare CPU per request / collector CPU per request) is reported beside it.

Targets: single events >= 0.85 x the bare endpoint's requests/s (also reported as CPU per request,
the steadier measure on a shared machine); 50-event batches >= 120,000 events per CPU-second of
the collector. A run with non-2xx answers or socket errors is marked invalid. The same run also
reports the batch's ceiling on this machine (`batch_ceiling`): the bare endpoint's CPU per request
plus the prescribed work of 50 events (`prescribed_work`: parse, validate, dump, write), nothing else.
Results: a JSON file in load/results/ (gitignored) and a Markdown table on stdout.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from clickstream.core.spool import SpoolReader, scan_blocks
from load.procs import cpu_seconds, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "load" / "results"
LUA = ROOT / "load" / "wrk" / "post.lua"
SERVER_CPU = "0"
CLIENT_CPU = "1"
CONNECTIONS = 64
DURATION_S = 10
WARMUP_S = 2
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BATCH = 50
TARGET_SINGLE_RATIO = 0.85
TARGET_BATCH_EVENTS_PER_CPU_S = 120_000


def beacon_event(now_ms: int, n: int) -> dict[str, Any]:
    """One page view as beacon.js sends it (event_id set by the browser), about 600 bytes of JSON."""
    return {
        "type": "page_view" if n % 5 else "click",
        "site_id": "shop.example.com",
        "anonymous_id": f"a-{uuid.UUID(int=n * 7919 + 1).hex[:20]}",
        "session_id": f"s-{uuid.UUID(int=n * 104729 + 3).hex[:16]}",
        "ts": now_ms - n,
        "url": f"https://shop.example.com/products/{n % 40}?utm_source=newsletter&utm_medium=email"
               "&utm_campaign=spring-sale",
        "event_id": str(uuid.uuid4()),
        "referrer": "https://www.google.com/",
        "title": "Trail running shoes — Example Shop",
        "utm": {"source": "newsletter", "medium": "email", "campaign": "spring-sale"},
        "variants": {"exp_checkout_button": "b", "exp_hero": "control"},
        "props": {"category": "shoes", "price": 129.9, "in_stock": True},
        "screen": {"w": 1440, "h": 900},
        "lang": "en-US",
    }


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if conn.recv(16).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def _start(args: list[str], port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", *args]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    _wait_listening(port, proc)
    return proc


def wrk(url: str, body: Path | None, duration_s: int, *, cpu: str | None = CLIENT_CPU, threads: int = 1,
        unique_events: int = 0) -> dict[str, Any]:
    """Run wrk (pinned to `cpu` unless None) posting `body`, or with `unique_events`, fresh batches of
    that many events per request (load/wrk/post.lua); return its WRK_JSON summary plus `req_per_s`
    and the command."""
    pin = ["taskset", "-c", cpu] if cpu is not None else []
    cmd = [*pin, "wrk", f"-t{threads}", f"-c{CONNECTIONS}", f"-d{duration_s}s", "-s", str(LUA), url]
    env = {"UNIQUE_EVENTS": str(unique_events)} if unique_events else {"BODY_FILE": str(body)}
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                         check=True, timeout=duration_s + 60).stdout
    match = re.search(r"^WRK_JSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no WRK_JSON line in wrk output:\n{out}")
    result: dict[str, Any] = orjson.loads(match.group(1))
    result["req_per_s"] = round(result["requests"] / (result["duration_us"] / 1e6), 1)
    result["valid"] = not any(result["errors"].values())
    shown = f"UNIQUE_EVENTS={unique_events}" if unique_events else f"BODY_FILE={body.name if body else ''}"
    result["command"] = f"{shown} " + " ".join(cmd).replace(str(ROOT) + "/", "")
    return result


def _accepted_total(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    match = re.search(rb"^clickstream_events_accepted_total (\S+)$", data, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def _drain(spool: Path) -> tuple[int, int]:
    """Delete sealed segments, as the flusher does once ClickHouse has them; return the block records
    and rows they held (rows per record: how many requests the collector's group commit,
    collector.app.TurnGroup, put in one record under this load)."""
    reader = SpoolReader(spool)
    records = rows = 0
    for segment in reader.sealed_segments():
        blocks, _ = scan_blocks(segment.path.read_bytes())
        records += len(blocks)
        rows += sum(block[2] for block in blocks)
        reader.mark_done(segment.segment_id)
    return records, rows


def machine() -> dict[str, Any]:
    """CPU model, core count, kernel, Python, wrk version, load average at start."""
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[:2]
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "wrk": " ".join(wrk_version),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def run() -> dict[str, Any]:
    """Measure bare vs collector for single events and 50-event batches; write and return the results."""
    work = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    now_ms = int(time.time() * 1000)
    bodies = {
        "single": work / "single.json",
        f"batch{BATCH}": work / f"batch{BATCH}.json",
    }
    bodies["single"].write_bytes(orjson.dumps(beacon_event(now_ms, 0)))
    bodies[f"batch{BATCH}"].write_bytes(orjson.dumps([beacon_event(now_ms, n) for n in range(BATCH)]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")}
    env["CLICKSTREAM_LOG_LEVEL"] = "warning"
    env["CLICKSTREAM_SPOOL_MAX_BYTES"] = str(64 * 1024**3)
    ports = {"bare": free_port(), "collector": free_port()}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "benchmark": "collector", "date": started.isoformat(timespec="seconds"), "machine": machine(),
        "settings": {"connections": CONNECTIONS, "duration_s": DURATION_S, "warmup_s": WARMUP_S, "rounds": ROUNDS,
                     "server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU, "spool_fsync_interval_ms": 20,
                     "body_bytes": {k: p.stat().st_size for k, p in bodies.items()}},
        "rounds": [],
    }
    try:
        procs["bare"] = _start(["load.bare_app", "--port", str(ports["bare"])], ports["bare"], env,
                               work / "bare.log")
        procs["collector"] = _start(
            ["clickstream.cli", "collector", "--port", str(ports["collector"]), "--data-dir", str(work / "data")],
            ports["collector"], env, work / "collector.log")
        accepted_before = _accepted_total(ports["collector"])
        expected_accepted = 0
        for _ in range(ROUNDS):
            runs: dict[str, Any] = {}
            for payload, body in bodies.items():
                for target in ("bare", "collector"):
                    url = f"http://127.0.0.1:{ports[target]}/collect"
                    warm = wrk(url, body, WARMUP_S)
                    cpu_before = cpu_seconds(procs[target].pid)
                    measured = wrk(url, body, DURATION_S)
                    cpu = cpu_seconds(procs[target].pid) - cpu_before
                    measured["server_cpu_s"] = round(cpu, 3)
                    measured["cpu_us_per_req"] = round(cpu * 1e6 / max(measured["requests"], 1), 1)
                    runs[f"{target}/{payload}"] = measured
                    if target == "collector":
                        per_request = BATCH if payload != "single" else 1
                        expected_accepted += per_request * (warm["requests"] + measured["requests"])
                        records, rows = _drain(work / "data" / "spool")
                        measured["spool_records"], measured["spool_rows"] = records, rows
                        measured["requests_per_record"] = round(rows / per_request / max(records, 1), 1)
            results["rounds"].append(runs)
        # every 2xx counted by wrk was an acknowledged (spooled) event batch; wrk may count a few
        # requests cut at the end of a run, so allow that many connections' worth of slack
        accepted = _accepted_total(ports["collector"]) - accepted_before
        results["collector_events_accepted"] = {"metrics": accepted, "from_wrk": expected_accepted}
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=60)
        shutil.rmtree(work / "data", ignore_errors=True)
    results["summary"] = summarize(results["rounds"])
    results["prescribed_us_per_event"] = prescribed_work(now_ms)
    results["summary"].update(batch_ceiling(results["summary"], results["prescribed_us_per_event"]))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"collector-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    results["results_file"] = str(path.relative_to(ROOT))
    shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    return results


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds: req/s per run, per-round ratios, batch events/s; targets and validity."""
    def med(key: str) -> float:
        return round(float(statistics.median(float(r[key]["req_per_s"]) for r in rounds)), 1)

    def ratio(payload: str) -> float:
        return round(float(statistics.median(
            float(r[f"collector/{payload}"]["req_per_s"]) / float(r[f"bare/{payload}"]["req_per_s"]) for r in rounds
        )), 3)

    batch = f"batch{BATCH}"
    summary: dict[str, Any] = {
        "bare_single_req_per_s": med("bare/single"),
        "collector_single_req_per_s": med("collector/single"),
        "single_ratio": ratio("single"),
        "single_ratio_per_round": [round(r["collector/single"]["req_per_s"] / r["bare/single"]["req_per_s"], 3)
                                   for r in rounds],
        "bare_batch_req_per_s": med(f"bare/{batch}"),
        "collector_batch_req_per_s": med(f"collector/{batch}"),
        "batch_ratio": ratio(batch),
        "collector_batch_events_per_s": round(med(f"collector/{batch}") * BATCH),
        "collector_batch_events_per_s_per_round": [round(r[f"collector/{batch}"]["req_per_s"] * BATCH)
                                                   for r in rounds],
        "all_runs_valid": all(run["valid"] for r in rounds for run in r.values()),
    }
    for payload in ("single", batch):
        summary[f"bare_{payload}_cpu_us_per_req"] = round(statistics.median(
            r[f"bare/{payload}"]["cpu_us_per_req"] for r in rounds), 1)
        summary[f"collector_{payload}_cpu_us_per_req"] = round(statistics.median(
            r[f"collector/{payload}"]["cpu_us_per_req"] for r in rounds), 1)
        summary[f"{payload}_cpu_ratio"] = round(
            summary[f"bare_{payload}_cpu_us_per_req"] / summary[f"collector_{payload}_cpu_us_per_req"], 3)
    for payload in ("single", batch):
        summary[f"{payload}_requests_per_record"] = round(statistics.median(
            r[f"collector/{payload}"].get("requests_per_record", 0) for r in rounds), 1)
    summary["collector_batch_events_per_cpu_s"] = round(BATCH * 1e6 / summary[f"collector_{batch}_cpu_us_per_req"])
    summary["single_target_met"] = summary["single_ratio"] >= TARGET_SINGLE_RATIO
    summary["single_cpu_target_met"] = summary["single_cpu_ratio"] >= TARGET_SINGLE_RATIO
    summary["batch_target_met"] = summary["collector_batch_events_per_cpu_s"] >= TARGET_BATCH_EVENTS_PER_CPU_S
    return summary


def prescribed_work(now_ms: int, requests: int = 2_000, repeats: int = 5) -> dict[str, float]:
    """CPU µs per event of the work a 50-event batch cannot do without, measured in this process with
    the collector's own libraries and calls, nothing else (no HTTP, no stamping, no spool framing):

    - `parse`: orjson decoding the body (collector.pipeline.parse_body);
    - `validate`: the JSON Schema check of the batch, one jsonschema-rs call for the 50 events
      (collector.schemas.EventSchemas.batch_version);
    - `dump`: orjson encoding each accepted event, a spool row (collector.pipeline.process);
    - `write`: one `pwrite(2)` of the batch's rows at the start of a file (the spool append, without
      its fsync, which a background thread does once per 20 ms for all requests; over pages already
      cached, so it is a lower bound of an append).

    `total` is their sum. Each step's median over `repeats` runs of `requests` batches, CPU time of
    this process (time.process_time).
    """
    from collector.pipeline import parse_body
    from collector.schemas import EventSchemas

    schemas = EventSchemas()
    body = orjson.dumps([beacon_event(now_ms, n) for n in range(BATCH)])
    events = parse_body(body, BATCH)
    if schemas.batch_version(events) is None:
        raise RuntimeError("the benchmark batch does not validate")
    rows = b"\n".join(map(orjson.dumps, events)) + b"\n"
    fd, path = tempfile.mkstemp(prefix="bench-prescribed-")

    def write() -> None:
        os.pwrite(fd, rows, 0)

    steps: dict[str, Callable[[], object]] = {
        "parse": lambda: parse_body(body, BATCH),
        "validate": lambda: schemas.batch_version(events),
        "dump": lambda: list(map(orjson.dumps, events)),
        "write": write,
    }
    out: dict[str, float] = {}
    try:
        for name, step in steps.items():
            times = timeit.repeat(step, timer=time.process_time, number=requests, repeat=repeats)
            out[name] = round(statistics.median(times) / requests / BATCH * 1e6, 3)
    finally:
        os.close(fd)
        os.unlink(path)
    out["total"] = round(sum(out.values()), 3)
    return out


def batch_ceiling(summary: dict[str, Any], prescribed: dict[str, float]) -> dict[str, Any]:
    """The most 50-event batch events per CPU-second a collector could reach on this machine: the
    bare endpoint's CPU per request (the framework's floor: uvicorn, Starlette, the body read, a
    202; same run) plus the prescribed work of its 50 events (`prescribed_work`), and nothing else."""
    floor_us = summary[f"bare_batch{BATCH}_cpu_us_per_req"] + BATCH * prescribed["total"]
    ceiling = round(BATCH * 1e6 / floor_us)
    return {"batch_floor_cpu_us_per_req": round(floor_us, 1), "batch_ceiling_events_per_cpu_s": ceiling,
            "batch_target_reachable": ceiling >= TARGET_BATCH_EVENTS_PER_CPU_S,
            "collector_batch_share_of_ceiling": round(summary["collector_batch_events_per_cpu_s"] / ceiling, 3)}


def markdown(results: dict[str, Any]) -> str:
    """The BENCHMARKS.md table of one run (medians over its rounds)."""
    s, m = results["summary"], results["machine"]
    batch = f"batch{BATCH}"
    p99 = {key: statistics.median(r[key]["latency_us"]["p99"] for r in results["rounds"]) / 1000
           for key in results["rounds"][0]}
    lines = [
        f"Run {results['date']}: {m['cpu']} ({m['cores']} cores), Linux {m['kernel']}, Python {m['python']}, "
        f"{m['wrk']}; load average at start {m['loadavg_at_start']}; median of {len(results['rounds'])} rounds.",
        "",
        "| payload | bare req/s | collector req/s | ratio (per round) | collector events/s (per round) "
        "| CPU µs/req bare / collector | CPU ratio | p99 ms bare / collector |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| single event | {s['bare_single_req_per_s']:,.0f} | {s['collector_single_req_per_s']:,.0f} | "
        f"{s['single_ratio']:.2f} ({', '.join(f'{x:.2f}' for x in s['single_ratio_per_round'])}) | "
        f"{s['collector_single_req_per_s']:,.0f} | {s['bare_single_cpu_us_per_req']:.0f} / "
        f"{s['collector_single_cpu_us_per_req']:.0f} | {s['single_cpu_ratio']:.2f} | "
        f"{p99['bare/single']:.0f} / {p99['collector/single']:.0f} |",
        f"| {BATCH}-event batch | {s['bare_batch_req_per_s']:,.0f} | {s['collector_batch_req_per_s']:,.0f} | "
        f"{s['batch_ratio']:.2f} | {s['collector_batch_events_per_s']:,} "
        f"({', '.join(f'{x:,}' for x in s['collector_batch_events_per_s_per_round'])}) | "
        f"{s[f'bare_{batch}_cpu_us_per_req']:.0f} / {s[f'collector_{batch}_cpu_us_per_req']:.0f} | "
        f"{s[f'{batch}_cpu_ratio']:.2f} | {p99[f'bare/{batch}']:.0f} / {p99[f'collector/{batch}']:.0f} |",
        "",
        f"Targets: single ratio >= {TARGET_SINGLE_RATIO}: {'met' if s['single_target_met'] else 'NOT met'} "
        f"(CPU ratio: {'met' if s['single_cpu_target_met'] else 'NOT met'}); batch >= "
        f"{TARGET_BATCH_EVENTS_PER_CPU_S:,} events per CPU-second: {'met' if s['batch_target_met'] else 'NOT met'}; "
        f"every run free of socket errors and non-2xx answers: {s['all_runs_valid']}. "
        f"Batch events per CPU-second of the collector: {s['collector_batch_events_per_cpu_s']:,}. "
        f"Requests per spool record (group commit): single {s['single_requests_per_record']}, "
        f"batch {s[f'{batch}_requests_per_record']}.",
    ]
    w = results["prescribed_us_per_event"]
    lines += ["",
              f"Ceiling of a {BATCH}-event batch on this machine: the bare endpoint's "
              f"{s[f'bare_{batch}_cpu_us_per_req']:.0f} µs per request plus the prescribed work, "
              f"{w['total']:.2f} µs per event (parse {w['parse']:.2f}, validate {w['validate']:.2f}, "
              f"dump {w['dump']:.2f}, write {w['write']:.2f}): {s['batch_floor_cpu_us_per_req']:.0f} µs per "
              f"request, **{s['batch_ceiling_events_per_cpu_s']:,} events per CPU-second** "
              f"(target {TARGET_BATCH_EVENTS_PER_CPU_S:,}: "
              f"{'reachable' if s['batch_target_reachable'] else 'NOT reachable'} here); the collector "
              f"reaches {s['collector_batch_share_of_ceiling']:.2f} of it."]
    return "\n".join(lines)


if __name__ == "__main__":
    run()


def run_ua_placement(events: int = 200_000) -> dict[str, Any]:
    """Where the User-Agent fields cost least, in-process, same run: the collector's stamp (one
    memoised look-up and one concatenation per request, `collector.pipeline.request_stamp`) vs the
    flusher completing each record as it did before block records (`flusher.legacy`: keys, memoised
    fields, line; per event), both with a warm memo of 50 User-Agents. Reported in µs."""
    from collector.pipeline import process, request_stamp
    from collector.schemas import EventSchemas
    from flusher import legacy

    agents = [f"Mozilla/5.0 (X11; Linux x86_64; rv:{100 + i}.0) Gecko/20100101 Firefox/{100 + i}.0" for i in range(50)]
    now = int(time.time() * 1000)
    stamp_us = min(timeit.repeat(lambda: [request_stamp(now, a, "0123456789abcdef") for a in agents],
                                 number=events // 50, repeat=3)) / events * 1e6
    validator = EventSchemas()
    records = []
    for i in range(500):
        outcome = process([beacon_event(now, i)], validator, received_at_ms=now, user_agent=agents[i % 50],
                          ip_hash="0123456789abcdef", max_age_ms=3_600_000, max_skew_ms=3_600_000)
        records.append(orjson.dumps({"event_id": orjson.loads(outcome.records[0])["event_id"],
                                     "user_agent": agents[i % 50], **orjson.loads(outcome.records[0])}))
    tail = b',"spool_segment":"seg","spool_offset":'

    def flusher_side() -> None:
        for offset, record in enumerate(records):
            _, ua = legacy.record_keys(record)
            legacy.ingest_line(record, tail, offset, legacy.agent_fields(ua))

    flusher_us = min(timeit.repeat(flusher_side, number=events // 500, repeat=3)) / events * 1e6
    result = {"benchmark": "user_agent_placement", "events": events,
              "collector_stamp_us_per_request": round(stamp_us, 3),
              "flusher_completion_us_per_event": round(flusher_us, 3),
              "note": "the collector pays once per request (all its events share the User-Agent); the flusher "
                      "paid once per event, and needed a Python object per record"}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "ua-placement.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return result
