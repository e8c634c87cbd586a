"""`clickstream import --flush` of 1 M events: this code vs the code before it vs ClickHouse's own insert.

Method, in one run on this machine, each side on its own copy of the same steady-state data
directory (embedded ClickHouse already holding `prefill` events, 10 M by default, so the flusher
starts with a full dedup memory and merges run on real parts; the roll-ups of the prefill folded,
as a running install has them):
- `new`: `python -m clickstream.cli import FILE --flush` of this checkout;
- `before`: the same command of the code at `BASELINE_REF` (the commit before the block spool,
  installed from `git archive` into a temp directory), i.e. today's rate;
- `clickhouse`: ClickHouse's own `INSERT INTO events_ingest FORMAT JSONEachRow` of the same file's
  lines, in batches of 50,000, with the same insert settings (no validation, no spool).
FILE: `events` JSONL lines of history (1 to 30 days old, integer `ts`, realistic fields, every
line valid), ~300 bytes each. Reported: wall seconds and events/s of each side (the CLI's from
process start to exit, so they include start-up and the dedup memory load), the ratio new /
before (target >= 3) and new / clickhouse; and the same ratios for the new side up to the end of its
flush, without the fold of the imported days that ends it (the summary's `fold_seconds`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from load.bench_flusher import prefill
from load.results import write_result
from reports.fold import fold

ROOT = Path(__file__).resolve().parent.parent
#: The code before the block spool (main when this benchmark was written).
BASELINE_REF = "30ae4fa"
DAY_MS = 86_400_000


def history_file(path: Path, events: int, seed: int = 7) -> int:
    """Write `events` JSONL lines of history to `path`; return its size in bytes."""
    now = int(time.time() * 1000)
    pages = ("/", "/pricing", "/features", "/blog/launch", "/docs/start", "/signup")
    sources = ("", "?utm_source=google&utm_medium=cpc&utm_campaign=spring", "?utm_source=newsletter&utm_medium=email",
               "", "?utm_source=facebook&utm_medium=paid_social", "")
    with open(path, "w") as fh:
        for i in range(events):
            session = i // 6
            ts = now - DAY_MS - (session * 7919 % (29 * DAY_MS // 1000)) * 1000 - (6 - i % 6) * 9000
            fh.write(json.dumps({
                "type": "page_view" if i % 6 else "click", "site_id": "history.example",
                "anonymous_id": f"v{session // 3}", "session_id": f"s{seed}-{session}", "ts": ts,
                "url": f"https://history.example{pages[i % 6]}{sources[session % 6]}",
                "event_id": str(uuid.UUID(int=(seed << 96) + i)),
                "referrer": "https://www.google.com/" if session % 4 == 1 else "",
                "title": "History Example", "variants": {"hero": "B" if session % 2 else "control"},
                "screen": {"w": 1440, "h": 900}, "lang": "en-US",
            }, separators=(",", ":")) + "\n")
    return path.stat().st_size


def install_ref(ref: str, target: Path) -> Path:
    """Install the code at git `ref` into `target` (no dependencies: this venv has them)."""
    src = target.with_name(target.name + "-src")
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    return target


def cli_import(file: Path, data_dir: Path, pythonpath: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")}
    env.update(CLICKSTREAM_DATA_DIR=str(data_dir), CLICKSTREAM_LOG_LEVEL="warning")
    cwd = data_dir.parent
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "clickstream.cli", "import", str(file), "--flush"],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"import failed ({done.returncode}): {done.stderr[-3000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 2), "summary": summary}


def clickhouse_insert(file: Path, data_dir: Path, batch: int = 50_000) -> dict[str, Any]:
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    try:
        started = time.perf_counter()
        rows = 0
        with open(file, "rb") as fh:
            lines: list[bytes] = []
            for line in fh:
                lines.append(line)
                if len(lines) == batch:
                    client.raw_insert("events_ingest", None, b"".join(lines), fmt="JSONEachRow",
                                      settings={**INSERT_SETTINGS, "insert_deduplication_token": f"ch-{rows}"})
                    rows += len(lines)
                    lines = []
            if lines:
                client.raw_insert("events_ingest", None, b"".join(lines), fmt="JSONEachRow",
                                  settings={**INSERT_SETTINGS, "insert_deduplication_token": f"ch-{rows}"})
                rows += len(lines)
        seconds = time.perf_counter() - started
    finally:
        client.close()
    return {"seconds": round(seconds, 2), "rows": rows}


def run(events: int = 1_000_000, prefill_events: int = 10_000_000) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    try:
        file = work / "history.jsonl"
        size = history_file(file, events)
        old_code = install_ref(BASELINE_REF, work / "before-code")
        dirs = {}
        for side in ("new", "before", "clickhouse"):  # TRICKY: a copied chDB directory does not open
            dirs[side] = work / side / "data"
            client = connect(f"chdb://{dirs[side] / 'clickhouse'}")
            migrate(client)
            prefill(client, prefill_events)
            while (run := fold(client)) is not None and run.days:  # the roll-ups of the prefill, as a running
                pass  # install has them (steady state): until no day is left marked
            client.close()
        sides = {
            "new": cli_import(file, dirs["new"], None),
            "before": cli_import(file, dirs["before"], str(old_code)),
            "clickhouse": clickhouse_insert(file, dirs["clickhouse"]),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rate = {side: round(events / r["seconds"]) for side, r in sides.items()}
    # the new side ends with a fold of the imported days (the roll-ups, which the code before did not
    # have): its rate up to the end of the flush, start-up included, as the other sides are timed
    fold_s = float(sides["new"]["summary"].get("fold_seconds") or 0.0)
    rate_flushed = round(events / (sides["new"]["seconds"] - fold_s))
    result = {
        "benchmark": "import_flush", "events": events, "file_bytes": size, "prefill_events": prefill_events,
        "baseline_ref": BASELINE_REF, "sides": sides, "events_per_s": rate,
        "ratio_new_to_before": round(rate["new"] / rate["before"], 2),
        "ratio_new_to_clickhouse": round(rate["new"] / rate["clickhouse"], 3),
        "new_fold_seconds": fold_s, "new_events_per_s_to_end_of_flush": rate_flushed,
        "ratio_new_to_before_to_end_of_flush": round(rate_flushed / rate["before"], 2),
        "ratio_new_to_clickhouse_to_end_of_flush": round(rate_flushed / rate["clickhouse"], 3),
        "cpus": os.cpu_count(),
    }
    return write_result("import", result)


if __name__ == "__main__":
    run()
