"""Flusher throughput vs ClickHouse's own insert of the same rows.

Method, in one process and one run, on embedded ClickHouse (chDB), each side on a fresh data
directory with the full schema (events + every materialized view):
- flusher: spool segments of generated traffic (as the collector writes them) -> `Flusher.flush_once`
  (read, decode, event_id dedup, enrich, JSONEachRow, insert with dedup token, delete segment);
- baseline: exactly the JSONEachRow lines the flusher sends (spool record + position + parsed
  User-Agent), cut into the same batches, `INSERT INTO events_ingest FORMAT JSONEachRow` with the
  same settings, so ClickHouse does the same enrichment and feeds the same views.
Reported: rows/s of each and the ratio flusher / baseline (target >= 0.8).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from clickstream.core.settings import Settings
from clickstream.core.spool import SpoolReader, SpoolWriter
from collector.pipeline import process
from collector.validation import EventValidator
from flusher.loop import Flusher
from load.model import ModelConfig, generate
from load.results import write_result


def _stamped_payloads(n_events: int, seed: int) -> list[bytes]:
    """Spool records exactly as the collector writes them (collector.pipeline.process)."""
    traffic = generate(ModelConfig(seed=seed, visitors=max(1, n_events // 10)))
    validator = EventValidator()
    now = int(time.time() * 1000)
    out: list[bytes] = []
    for event, agent in traffic.events[:n_events]:
        outcome = process([dict(event)], validator, received_at_ms=now, user_agent=agent,
                          ip_hash="0123456789abcdef", max_age_ms=100 * 3_600_000, max_skew_ms=3_600_000)
        out.extend(outcome.records)
    return out


def _warm_up(client: Any, lines: list[bytes]) -> None:
    """One untimed insert on each engine, so neither side pays first-query costs in the timing."""
    body = b"\n".join(line.replace(b'"site_id":"', b'"site_id":"warm-up') for line in lines)
    client.raw_insert("events_ingest", None, body, fmt="JSONEachRow",
                      settings={**INSERT_SETTINGS, "insert_deduplication_token": "warm-up"})


def run(n_events: int = 200_000, batch_rows: int = 50_000, seed: int = 3) -> dict[str, Any]:
    payloads = _stamped_payloads(n_events, seed)
    work = Path(tempfile.mkdtemp(prefix="bench-flusher-"))
    try:
        # the spool, as the collector leaves it: sealed segments of batch_rows records
        writer = SpoolWriter(work / "a" / "spool", fsync_interval_ms=0, segment_max_bytes=1 << 30).open()
        for start in range(0, len(payloads), batch_rows):
            writer.append(payloads[start : start + batch_rows])
            writer.seal_active()
        writer.close()
        records = [r for seg in SpoolReader(work / "a" / "spool").sealed_segments()
                   for r in SpoolReader(work / "a" / "spool").records(seg)]
        lines = [r.payload for r in records]

        client = connect(f"chdb://{work / 'a' / 'clickhouse'}")
        migrate(client)
        _warm_up(client, lines[:100])
        flusher = Flusher(Settings(data_dir=work / "a", flush_max_rows=batch_rows), client)
        started = time.perf_counter()
        flushed = flusher.flush_once()
        flusher_s = time.perf_counter() - started
        assert flushed == len(payloads), (flushed, len(payloads))
        client.close()

        client = connect(f"chdb://{work / 'b' / 'clickhouse'}")
        migrate(client)
        _warm_up(client, lines[:100])
        started = time.perf_counter()
        for i, start in enumerate(range(0, len(lines), batch_rows)):
            body = b"\n".join(lines[start : start + batch_rows])
            client.raw_insert("events_ingest", None, body, fmt="JSONEachRow",
                              settings={**INSERT_SETTINGS, "insert_deduplication_token": f"baseline-{i}"})
        baseline_s = time.perf_counter() - started
        (count,) = client.query("SELECT count() FROM events WHERE NOT startsWith(site_id, 'warm-up')").result_rows[0]
        assert count == len(payloads)
        client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "flusher_vs_jsoneachrow",
        "rows": len(payloads), "batch_rows": batch_rows,
        "flusher_rows_per_s": round(len(payloads) / flusher_s),
        "baseline_rows_per_s": round(len(payloads) / baseline_s),
        "ratio": round(baseline_s / flusher_s, 3),
        "engine": "chDB (embedded ClickHouse), same schema and materialized views",
        "cpus": os.cpu_count(),
    }
    return write_result("flusher", result)


if __name__ == "__main__":
    run()
