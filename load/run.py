"""One `clickstream load` run: generate, drive, wait for the flusher, audit, write the results."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from load.audit import audit, wait_for_flush
from load.driver import drive
from load.model import ModelConfig, Truth, generate
from reports.query import port_rows_query

EVENTS_PER_VISITOR = 10.5  # what the model generates on average (measured over seeds 1-5)


@dataclasses.dataclass
class LoadOptions:
    url: str
    events: int | None = None
    rate: float | None = None
    duration_s: float | None = None
    seed: int = 1
    concurrency: int = 32
    stitch_token: str = ""
    sql_url: str = "http://127.0.0.1:8123"
    sql_user: str = "dashboards"
    sql_password: str = ""
    data_dir: Path | None = None
    out_dir: Path | None = None
    audit: bool = True
    audit_timeout_s: float = 300.0
    site_id: str = ""


def run(options: LoadOptions, echo: Callable[..., Any] = click.echo) -> int:
    """Run, audit and report; return the process exit code (0 only for a clean audit)."""
    target = options.events if options.events else int((options.rate or 0) * (options.duration_s or 0))
    if target <= 0:
        raise click.UsageError("give --events N, or --rate N with --duration S")
    site = options.site_id or f"load-{options.seed}-{int(time.time())}.example"
    traffic = generate(ModelConfig(seed=options.seed, visitors=max(1, round(target / EVENTS_PER_VISITOR)),
                                   site_id=site))
    if not options.stitch_token:
        traffic = dataclasses.replace(traffic, leads=[])
    truth = Truth(traffic)
    echo(f"site {site}: {len(traffic.events)} events ({len(traffic.invalid)} invalid), "
         f"{len(traffic.sessions)} sessions, {len(traffic.leads)} leads -> {options.url}")
    started = time.perf_counter()
    bar: Any = click.progressbar(length=len(traffic.events) + len(traffic.invalid), label="sending",
                                 file=sys.stderr)
    with bar:
        ledger = asyncio.run(drive(options.url, traffic, seed=options.seed, rate=options.rate,
                                   concurrency=options.concurrency, stitch_token=options.stitch_token,
                                   progress=bar.update))
    elapsed = time.perf_counter() - started
    summary: dict[str, Any] = {"site_id": site, "seed": options.seed, "elapsed_s": round(elapsed, 3),
                               "events_per_s": round(len(ledger.accepted) / elapsed, 1), **ledger.summary()}
    problems: list[str] = []
    if options.audit:
        if not options.sql_password:
            raise click.UsageError("the audit reads ClickHouse through the query port: set CLICKSTREAM_SQL_PASSWORD "
                                   "(or pass --data-dir with its .sql_password, or --no-audit)")
        query, client = port_rows_query(options.sql_url, options.sql_user, options.sql_password)
        try:
            summary["flush_wait_s"] = round(wait_for_flush(query, site, len(ledger.accepted), len(ledger.stitched),
                                                           options.audit_timeout_s), 3)
            problems = audit(query, ledger, truth, data_dir=options.data_dir)
        finally:
            client.close()
        summary["audit"] = {"clean": not problems, "problems": len(problems)}
    out = options.out_dir or Path("load/results") / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "ledger.json").write_text(json.dumps({"accepted": sorted(ledger.accepted), "rejected": ledger.rejected}))
    (out / "truth.json").write_text(json.dumps({
        "daily_traffic": truth.daily_traffic(), "landing_pages": truth.landing_pages(),
        "channels": {"|".join(k): v for k, v in truth.channels().items()},
        "variants": {"|".join(k): v for k, v in truth.variant_counts().items()}}, indent=2))
    (out / "timeline.json").write_text(json.dumps(ledger.timeline))
    for line in problems[:200]:
        echo(f"DIFF {line}", err=True)
    echo(json.dumps(summary, indent=2))
    echo(f"results in {out}")
    if ledger.unexpected or problems:
        return 1
    return 0
