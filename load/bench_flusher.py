"""Flusher throughput vs ClickHouse's own insert of the same rows, in the steady state.

Method, in one process and one run, on embedded ClickHouse (chDB) with the full schema (events and
every materialized view):
- steady state first: `events` already holds `prefill` events (10 M by default, generated inside
  ClickHouse as in load/bench_views.py), so parts, merges and the dedup memory are those of a
  running install; the flusher starts with its client-retry memory full (`dedup_max_ids` = 1 M ids
  loaded from `events`) and evicts one id per event flushed;
- spool: segments of ~`segment_rows` events as the collector writes them: requests of the traffic
  model (load/model.py) in the driver's batch sizes {1, 1, 1, 5, 10, 50} (or single events only),
  stamped by `collector.pipeline.process`, `group` requests per block record (1, or as many as the
  collector's group commit puts in one at its limit: `GROUP_AT_SATURATION`);
- then, `per_round` segments at a time, alternating (the side that goes first alternates too, as
  merges started by one side's inserts run on into the next): the flusher flushes them (`Flusher.flush_once`:
  read, CRC check, dedup, byte ranges, `INSERT INTO events_ingest FORMAT JSONEachRow` with a dedup
  token, segment delete; pipelined as when it runs behind: the next segment is read while one is
  inserted), and the baseline sends exactly the same rows (site ids renamed so both land) in the
  same batches with `INSERT … FORMAT JSONEachRow` and the same settings;
- `segments` segments each: long enough for ClickHouse to merge (active parts are sampled) and for
  hundreds of thousands of evictions from the dedup memory.
`run_rollups_side_by_side` runs it without and with the roll-ups' ingest path (BENCHMARKS.md).
Before each side the run waits until no merge runs (`settle`), so neither side's timing holds merges
the other side or the fold started.
Reported: rows/s of each side (sum of its wall times) and the ratio flusher / baseline (target
>= 0.9); the same with the process's CPU time (all threads, chDB's included), which other jobs on
a shared machine move much less; active parts of `events`/`sessions`/`variant_exposures` before,
at most during, and after the run; and each round's figures (`rounds`).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import INSERT_SETTINGS, ClickHouseSink, connect, migrate
from clickstream.core.settings import Settings
from clickstream.core.spool import SpoolReader, SpoolWriter, frames, records_of, scan_blocks
from collector.pipeline import process
from collector.schemas import EventSchemas
from flusher.loop import Flusher
from load.bench_views import GENERATE
from load.model import ModelConfig, generate
from load.results import write_result
from reports.fold import fold

#: Requests per block record when the collector runs at its limit (64 connections of single events
#: on one core: 23.8-26.1 in load/bench_collector.py, BENCHMARKS.md "Collector").
GROUP_AT_SATURATION = 25
#: The driver's request sizes (load/driver.py): single-event requests are the common case.
BATCH_SIZES = (1, 1, 1, 5, 10, 50)
PARTS_QUERY = ("SELECT table, count() FROM system.parts WHERE database = currentDatabase() AND active "
               "AND table IN ('events', 'sessions', 'variant_exposures') GROUP BY table ORDER BY table")


def requests_of(n_events: int, seed: int, single: bool) -> list[tuple[list[dict[str, Any]], str]]:
    """Requests (events without ids, User-Agent) of the traffic model, in the driver's batch sizes."""
    traffic = generate(ModelConfig(seed=seed, visitors=max(1, n_events // 10)))
    rng = random.Random(seed)
    events = traffic.events[:n_events]
    out: list[tuple[list[dict[str, Any]], str]] = []
    i = 0
    while i < len(events):
        size = 1 if single else rng.choice(BATCH_SIZES)
        agent = events[i][1]
        batch: list[dict[str, Any]] = []
        while i < len(events) and len(batch) < size and events[i][1] == agent:
            batch.append({k: v for k, v in events[i][0].items() if k != "event_id"})
            i += 1
        out.append((batch, agent))
    return out


def write_segment(writer: SpoolWriter, requests: list[tuple[list[dict[str, Any]], str]], rows: int,
                  group: int = 1) -> int:
    """Append requests (fresh event ids each time) until `rows` events, `group` requests per block
    record as the collector's group commit writes the requests of one event-loop turn
    (collector.app.TurnGroup); seal; return the count."""
    validator = EventSchemas()
    now = int(time.time() * 1000)
    written = 0
    pending: list[tuple[list[bytes], list[bytes], bytes]] = []
    while written < rows:
        for batch, agent in requests:
            outcome = process([dict(e) for e in batch], validator, received_at_ms=now, user_agent=agent,
                              ip_hash="0123456789abcdef", max_age_ms=1000 * 3_600_000, max_skew_ms=3_600_000)
            pending.append((outcome.ids, outcome.records, outcome.stamp))
            written += len(outcome.records)
            if len(pending) >= group or written >= rows:
                writer.append_group(pending)
                pending = []
            if written >= rows:
                break
    writer.seal_active()
    return written


def prefill(client: Client, n_events: int) -> None:
    """`n_events` events generated inside ClickHouse (through events_ingest and every view)."""
    now_ms = int(time.time() * 1000)
    step = 2_000_000
    for start in range(0, n_events, step):
        client.command(GENERATE.format(site="prefill.example", now_ms=now_ms, start=start,
                                       count=min(step, n_events - start)),
                       settings={"async_insert": 0})


def active_parts(client: Client) -> dict[str, int]:
    return {str(t): int(n) for t, n in client.query(PARTS_QUERY).result_rows}


MERGES_QUERY = "SELECT count() FROM system.merges WHERE database = currentDatabase()"


def settle(client: Client, timeout_s: float = 600.0) -> float:
    """Wait until no merge of this database runs (two polls 0.2 s apart), at most `timeout_s`;
    return the seconds waited. Run before each side, so that neither pays, in its timing, for the
    merges the other side's inserts (or the fold) started."""
    started = time.perf_counter()
    quiet = 0
    while quiet < 2 and time.perf_counter() - started < timeout_s:
        quiet = quiet + 1 if client.query(MERGES_QUERY).result_rows[0][0] == 0 else 0
        time.sleep(0.2)
    return time.perf_counter() - started


def _timed(side: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, what `side` returned) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = side()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run(prefill_events: int = 10_000_000, segments: int = 32, segment_rows: int = 50_000,
        single: bool = False, seed: int = 3, per_round: int = 4, rollups: bool = True,
        group: int = 1, settle_merges: bool = True) -> dict[str, Any]:
    """`settle_merges`: before each side, wait until no merge runs (`settle`); without it, the merges
    one side (or the fold) started run on into the next side's timing. `group`: requests per block
    record (1: one request per turn of the collector's event loop, light
    traffic; under load the collector's group commit puts tens in one, `requests_per_record` in
    load/bench_collector.py). `rollups=False` drops the fold's dirty-day view (fold_dirty_days_mv,
    sql/0101_rollups.sql) and runs no fold: the ingest path as it was before the roll-ups, for the
    side-by-side figure. With them, a fold runs after every round (outside both sides' timings) and
    its duration is reported."""
    work = Path(tempfile.mkdtemp(prefix="bench-flusher-"))
    fold_s: list[float] = []
    try:
        requests = requests_of(20_000, seed, single)
        client = connect(f"chdb://{work / 'clickhouse'}")
        migrate(client)
        if not rollups:
            client.command("DROP VIEW fold_dirty_days_mv")
        started = time.perf_counter()
        prefill(client, prefill_events)
        prefill_s = time.perf_counter() - started
        if rollups:
            started = time.perf_counter()
            fold(client)  # the backfill of the prefill, before the measured rounds
            fold_s.append(time.perf_counter() - started)
        parts_before = active_parts(client)
        settings = Settings(data_dir=work, flush_max_rows=segment_rows)
        flusher = Flusher(settings, client)  # loads the dedup memory (1 M ids) from `events`
        memory_at_start = len(flusher.memory)
        writer = SpoolWriter(settings.spool_dir, fsync_interval_ms=0, segment_max_bytes=1 << 30,
                             segment_max_age_ms=3_600_000).open()
        reader = SpoolReader(settings.spool_dir)
        flusher_s = baseline_s = flusher_cpu = baseline_cpu = 0.0
        rows = records = 0
        rounds: list[dict[str, Any]] = []
        max_parts: dict[str, int] = dict(parts_before)
        for k in range(0, segments, per_round):
            bodies = []
            for _ in range(per_round):
                write_segment(writer, requests, segment_rows, group)
                segment = reader.sealed_segments()[-1]
                data = segment.path.read_bytes()
                records += len(frames(data)[0])
                bodies.append(b"".join(r.payload.replace(b'"site_id":"', b'"site_id":"b-', 1) + b"\n"
                                       for r in records_of(segment.segment_id, data, frames(data)[0])))
            expected = sum(body.count(b"\n") for body in bodies)

            flush = flusher.flush_once  # pipelined: the next segment is read while one is inserted

            def baseline(k: int = k, bodies: list[bytes] = bodies) -> int:
                for i, body in enumerate(bodies):
                    client.raw_insert("events_ingest", None, body, fmt="JSONEachRow",
                                      settings={**INSERT_SETTINGS, "insert_deduplication_token": f"baseline-{k}-{i}"})
                return 0

            # The side that goes first alternates round by round, and with `settle_merges` each side
            # starts once no merge runs: otherwise the merges that a round's inserts (and the fold)
            # start run on into whichever side comes next, and count in its CPU time.
            flusher_first = (k // per_round) % 2 == 0
            waited = 0.0
            timed: dict[str, tuple[float, float, int]] = {}
            for name in ("flusher", "baseline") if flusher_first else ("baseline", "flusher"):
                if settle_merges:
                    waited += settle(client)
                timed[name] = _timed(flush if name == "flusher" else baseline)
            (f_wall, f_cpu, flushed), (b_wall, b_cpu, _) = timed["flusher"], timed["baseline"]
            flusher_cpu += f_cpu
            baseline_cpu += b_cpu
            if flushed != expected:
                raise RuntimeError(f"round {k}: flushed {flushed} rows of {expected}")
            flusher_s += f_wall
            baseline_s += b_wall
            rows += flushed
            rounds.append({"flusher_first": flusher_first, "rows": flushed,
                           "flusher_s": round(f_wall, 3), "baseline_s": round(b_wall, 3),
                           "flusher_cpu_us_per_row": round(f_cpu / flushed * 1e6, 2),
                           "baseline_cpu_us_per_row": round(b_cpu / flushed * 1e6, 2),
                           "dedup_ids": len(flusher.memory), "settle_s": round(waited, 1)})
            for table, n in active_parts(client).items():
                max_parts[table] = max(max_parts.get(table, 0), n)
            if rollups:
                started = time.perf_counter()
                fold(client)
                fold_s.append(time.perf_counter() - started)
        writer.close()
        parts_after = active_parts(client)
        (total,) = client.query("SELECT count() FROM events").result_rows[0]
        client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "flusher_vs_jsoneachrow",
        "requests": "single events" if single else f"batch sizes {BATCH_SIZES}",
        "requests_per_record": group, "spool_records": records,
        "prefill_events": prefill_events, "prefill_s": round(prefill_s, 1), "events_after": int(total),
        "dedup_ids_at_start": memory_at_start, "rows_per_side": rows, "segments": segments,
        "batch_rows": segment_rows,
        "flusher_rows_per_s": round(rows / flusher_s),
        "baseline_rows_per_s": round(rows / baseline_s),
        "ratio": round(baseline_s / flusher_s, 3),
        # CPU seconds of this process (every thread, chDB's included) per side: moves much less than
        # wall time when other jobs share the machine
        "flusher_cpu_us_per_row": round(flusher_cpu / rows * 1e6, 2),
        "baseline_cpu_us_per_row": round(baseline_cpu / rows * 1e6, 2),
        "cpu_ratio": round(baseline_cpu / flusher_cpu, 3),
        "rollups": rollups,
        "settle_merges": settle_merges,
        "fold_backfill_s": round(fold_s[0], 2) if fold_s else None,
        "fold_per_round_s": [round(f, 2) for f in fold_s[1:]],
        # each round: who went first, wall seconds and CPU per row of each side, ids in the dedup
        # memory after it (shows what changes as a run crosses the memory's rotation, merges, folds)
        "rounds": rounds,
        "active_parts_before": parts_before, "active_parts_max": max_parts, "active_parts_after": parts_after,
        "engine": "chDB (embedded ClickHouse), same schema and materialized views, same database",
        "cpus": os.cpu_count(),
    }
    name = ("flusher-single" if single else "flusher") + ("" if rollups else "-no-rollups")
    return write_result(name + (f"-group{group}" if group > 1 else ""), result)


def run_rollups_side_by_side(prefill_events: int = 2_000_000, segments: int = 16) -> dict[str, Any]:
    """The flusher benchmark without, then with the roll-ups' ingest path (and a fold per round): the
    ingest cost of the roll-ups (target: rows/s drops by at most 10 %)."""
    without = run(prefill_events, segments=segments, rollups=False)
    with_rollups = run(prefill_events, segments=segments, rollups=True)
    return write_result("flusher-rollups", {
        "benchmark": "flusher_with_and_without_rollups", "prefill_events": prefill_events, "segments": segments,
        "without": {k: without[k] for k in ("flusher_rows_per_s", "baseline_rows_per_s", "flusher_cpu_us_per_row")},
        "with": {k: with_rollups[k] for k in ("flusher_rows_per_s", "baseline_rows_per_s", "flusher_cpu_us_per_row",
                                              "fold_backfill_s", "fold_per_round_s")},
        "flusher_rows_per_s_with_over_without": round(with_rollups["flusher_rows_per_s"]
                                                      / without["flusher_rows_per_s"], 3),
        "flusher_cpu_per_row_without_over_with": round(without["flusher_cpu_us_per_row"]
                                                       / with_rollups["flusher_cpu_us_per_row"], 3),
    })


#: A Null table with the columns of `events_ingest` and no materialized view: what `run_transport` inserts
#: into, so that its timings hold the hand-over and ClickHouse's parse of the rows, not the views or merges.
TRANSPORT_TABLE = "bench_ingest_null"


def run_transport(segment_rows: int = 50_000, rounds: int = 30, seed: int = 3) -> dict[str, Any]:
    """How the flusher hands a batch to embedded ClickHouse, A/B in one run: the byte ranges of a real
    segment's block rows (`GROUP_AT_SATURATION` requests per record) written as they are (`ClickHouseSink`
    with a sequence: `writev(2)` into a temporary file, `INSERT … FROM INFILE`) against the same ranges
    joined into one buffer and sent with `raw_insert` (what the flusher did before: clickhouse-connect's
    chDB backend writes that buffer to a temporary file and runs the same `INSERT … FROM INFILE`).

    Into TRANSPORT_TABLE, alternating which goes first, `rounds` rounds (the first two of each side
    dropped as warm-up); medians of wall and process CPU time (all threads, chDB's included) per row."""
    work = Path(tempfile.mkdtemp(prefix="bench-transport-"))
    try:
        client = connect(f"chdb://{work / 'clickhouse'}")
        migrate(client)
        client.command(f"CREATE TABLE {TRANSPORT_TABLE} AS events_ingest ENGINE = Null")
        settings = Settings(data_dir=work)
        writer = SpoolWriter(settings.spool_dir, fsync_interval_ms=0, segment_max_bytes=1 << 30,
                             segment_max_age_ms=3_600_000).open()
        rows = write_segment(writer, requests_of(20_000, seed, False), segment_rows, GROUP_AT_SATURATION)
        writer.close()
        data = SpoolReader(settings.spool_dir).sealed_segments()[-1].path.read_bytes()
        view = memoryview(data)
        ranges = [view[rows_start:end] for _, end, _, _, rows_start in scan_blocks(data)[0]]
        sink = ClickHouseSink(client)
        sides: dict[str, Callable[[int], object]] = {
            "ranges (writev, this version)": lambda i: sink.insert(TRANSPORT_TABLE, ranges, f"ranges-{i}"),
            "joined (raw_insert, before)": lambda i: client.raw_insert(
                TRANSPORT_TABLE, None, b"".join(ranges), fmt="JSONEachRow",
                settings={**INSERT_SETTINGS, "insert_deduplication_token": f"joined-{i}"}),
        }
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for i in range(rounds):
            for name in sides if i % 2 == 0 else reversed(list(sides)):
                started_wall, started_cpu = time.perf_counter(), time.process_time()
                sides[name](i)
                times[name].append((time.perf_counter() - started_wall, time.process_time() - started_cpu))
        out: dict[str, Any] = {"benchmark": "flusher_transport", "rows_per_batch": rows, "ranges": len(ranges),
                               "bytes_per_batch": sum(r.nbytes for r in ranges), "rounds": rounds, "sides": {}}
        for name, measured in times.items():
            kept = measured[2:]
            out["sides"][name] = {
                "wall_ms": round(statistics.median(w for w, _ in kept) * 1000, 1),
                "cpu_us_per_row": round(statistics.median(c for _, c in kept) * 1e6 / rows, 3),
            }
        first, second = (out["sides"][n] for n in sides)
        out["cpu_saved_us_per_row"] = round(second["cpu_us_per_row"] - first["cpu_us_per_row"], 3)
        out["wall_ratio_before_over_this"] = round(second["wall_ms"] / first["wall_ms"], 3)
        client.close()
        return write_result("flusher-transport", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_grouped() -> dict[str, Any]:
    """The driver's batch sizes with `GROUP_AT_SATURATION` requests per block record: the spool the
    collector writes when it runs at its limit (BENCHMARKS.md "Collector", requests per record)."""
    return run(group=GROUP_AT_SATURATION)


def run_single_grouped() -> dict[str, Any]:
    """Single-event requests, `GROUP_AT_SATURATION` per block record."""
    return run(single=True, segments=16, group=GROUP_AT_SATURATION)


def run_single() -> dict[str, Any]:
    """The same with single-event requests only: one block record per event (the worst case)."""
    return run(single=True, segments=16)


if __name__ == "__main__":
    run()
