"""`clickstream load` against a real `clickstream serve`: a clean audit, and a dirty one caught."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from clickstream.core.clickhouse import connect
from clickstream.core.settings import Settings
from tests.conftest import ROOT, Server

STITCH, SQL_PASSWORD = "stitch-secret", "sql-secret"


def run_load(server: Server, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLICKSTREAM_STITCH_TOKEN": STITCH, "CLICKSTREAM_SQL_PASSWORD": SQL_PASSWORD}
    return subprocess.run(
        [sys.executable, "-m", "clickstream.cli", "load", "--url", server.url, "--sql-url", server.sql_url,
         "--out", str(out),
         "--data-dir", str(server.data_dir), "--audit-timeout-s", "120", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def test_load_run_audits_clean(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    server = server_factory("serve", stitch_token=STITCH, sql_password=SQL_PASSWORD)
    result = run_load(server, tmp_path / "run", "--events", "12000", "--seed", "5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["audit"] == {"clean": True, "problems": 0}
    assert summary["accepted"] >= 12000 * 0.9
    assert summary["rejected"] > 0  # the model's invalid events were sent and refused
    assert summary["leads"] > 0
    ledger = json.loads((tmp_path / "run" / "ledger.json").read_text())
    assert len(ledger["accepted"]) == summary["accepted"]
    # recompute is the auditor: every roll-up equals a recount of events (serve stopped: chDB is ours)
    assert server.stop() == 0
    done = subprocess.run([sys.executable, "-m", "clickstream.cli", "reconcile", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "CLICKSTREAM_DATA_DIR": str(server.data_dir)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "checked: clean" in done.stdout


def test_audit_reports_a_lost_event(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    """The audit can fail: an acknowledged event deleted from ClickHouse is reported as lost."""
    server = server_factory("serve", stitch_token=STITCH, sql_password=SQL_PASSWORD)
    first = run_load(server, tmp_path / "run", "--events", "1500", "--seed", "6", "--no-audit")
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert server.stop() == 0
    client = connect(Settings(data_dir=server.data_dir).resolved_clickhouse_url)
    try:
        victim = json.loads((tmp_path / "run" / "ledger.json").read_text())["accepted"][0]
        client.command("DELETE FROM events WHERE event_id = {id:UUID}", parameters={"id": victim})
    finally:
        client.close()
    from load.audit import audit
    from load.driver import Ledger
    from load.model import ModelConfig, Truth, generate

    ledger = Ledger(accepted=set(json.loads((tmp_path / "run" / "ledger.json").read_text())["accepted"]))
    import dataclasses

    traffic = generate(ModelConfig(seed=6, visitors=round(1500 / 10.5), site_id=summary["site_id"]))
    traffic = dataclasses.replace(traffic, leads=[])
    client = connect(Settings(data_dir=server.data_dir).resolved_clickhouse_url)
    try:
        def query(sql: str) -> list[dict[str, object]]:
            result = client.query(sql)
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

        problems = audit(query, ledger, Truth(traffic))
    finally:
        client.close()
    assert any(p.startswith("lost: 1 acknowledged") and victim in p for p in problems), problems[:5]


#: The slowest dashboard view (BENCHMARKS.md "Dashboard views") over all data, as a dashboard reads it.
HEAVY_DASHBOARD_QUERY = "SELECT * FROM v_channels ORDER BY sessions DESC FORMAT JSON"


def test_heavy_dashboard_query_during_load_leaves_ingest_untouched(server_factory: Callable[..., Server],
                                                                   tmp_path: Path) -> None:
    """While `clickstream load` runs (and audits), a dashboard repeats the heaviest view query through the
    query port: every event is acknowledged without a retry, nothing is lost or duplicated, the flusher
    never retries or dead-letters, and the dashboard gets its answers."""
    server = server_factory("serve", stitch_token=STITCH, sql_password=SQL_PASSWORD)
    stop = threading.Event()
    answers: list[int] = []

    def dashboard() -> None:
        with httpx.Client(auth=("dashboards", SQL_PASSWORD), timeout=120) as http:
            while not stop.is_set():
                answers.append(http.post(server.sql_url, content=HEAVY_DASHBOARD_QUERY).status_code)

    reader = threading.Thread(target=dashboard)
    reader.start()
    try:
        result = run_load(server, tmp_path / "run", "--events", "12000", "--seed", "7")
    finally:
        stop.set()
        reader.join()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["audit"] == {"clean": True, "problems": 0}
    assert (summary["retries"], summary["unexpected"]) == (0, [])  # no 503, no lost answer
    metrics = server.client().get("/metrics").text
    assert re.search(r"^clickstream_flusher_retries_total 0\.0$", metrics, re.MULTILINE)
    dead_letters = re.findall(r"^clickstream_flusher_dead_letters_total\{.*\} ([0-9.e+]+)$", metrics, re.MULTILINE)
    assert all(float(n) == 0 for n in dead_letters), dead_letters
    assert re.search(r'^clickstream_requests_total\{status="503"\} 0\.0$', metrics, re.MULTILINE)
    assert len(answers) > 0 and set(answers) == {200}
