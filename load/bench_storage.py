"""Storage per event: spool bytes (sizing the spool volume for an outage) and ClickHouse bytes on
disk per table (sizing ClickHouse), per million events, for deploy/README.md "Sizing".

`python -m load.bench storage`: the load model's realistic traffic (load/model.py) is written as
JSONL, spooled by `clickstream import`'s code path (collector validation, sealed segments), the
spool is measured, then flushed into embedded ClickHouse (chDB) by the flusher; after
`OPTIMIZE … FINAL` (what background merges converge to), `system.parts` gives each table's
compressed bytes on disk. ClickHouse compresses better with more data per part: measured at 1M
events the figures are an upper bound for larger volumes.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from clickstream.core.clickhouse import open_clickhouse
from clickstream.core.settings import Settings
from collector.importer import import_file
from flusher.loop import Flusher
from load.model import ModelConfig, generate
from load.results import write_result

TABLES = ("events", "sessions", "variant_exposures", "lead_events", "conversions")


def run(n_events: int = 1_000_000, seed: int = 5) -> dict[str, Any]:
    traffic = generate(ModelConfig(seed=seed, visitors=max(1, n_events // 10), span_hours=70.0))
    events = traffic.events[:n_events]
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        jsonl = work / "events.jsonl"
        with open(jsonl, "wb") as fh:
            for event, _agent in events:
                fh.write(orjson.dumps(event) + b"\n")
        settings = Settings.from_env({}, overrides={"data_dir": work / "data"})
        started = time.perf_counter()
        imported = import_file(settings, jsonl)
        spool_bytes = sum(p.stat().st_size for p in settings.spool_dir.glob("*.seg"))
        client = open_clickhouse(settings.resolved_clickhouse_url)
        try:
            flushed = Flusher(settings, client).drain()
            for table in TABLES:
                client.command(f"OPTIMIZE TABLE {table} FINAL")
            parts = {
                str(table): (int(on_disk), int(uncompressed), int(rows))
                for table, on_disk, uncompressed, rows in client.query(
                    "SELECT table, sum(bytes_on_disk), sum(data_uncompressed_bytes), sum(rows) FROM system.parts "
                    "WHERE active AND database = currentDatabase() GROUP BY table").result_rows
            }
        finally:
            client.close()
        elapsed = time.perf_counter() - started
        per_million = 1_000_000 / max(1, imported.accepted)
        result: dict[str, Any] = {
            "benchmark": "storage", "events": imported.accepted, "flushed": flushed,
            "sessions": len(traffic.sessions), "seconds": round(elapsed, 1),
            "jsonl_bytes_per_event": round(jsonl.stat().st_size / len(events), 1),
            "spool_bytes_per_event": round(spool_bytes / max(1, imported.accepted), 1),
            "spool_mib_per_million_events": round(spool_bytes * per_million / 2**20, 1),
            "clickhouse_mib_per_million_events": {
                table: round(parts.get(table, (0, 0, 0))[0] * per_million / 2**20, 2) for table in TABLES},
            "compression_ratio": {
                table: round(parts[table][1] / parts[table][0], 1) for table in TABLES if parts.get(table, (0,))[0]},
            "rows": {table: parts.get(table, (0, 0, 0))[2] for table in TABLES},
        }
        result["clickhouse_mib_per_million_events_total"] = round(
            sum(result["clickhouse_mib_per_million_events"].values()), 1)
        return write_result("storage", result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import sys

    run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
