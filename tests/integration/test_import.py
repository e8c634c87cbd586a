"""`clickstream import FILE`: history through the same validation and flusher path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson

from clickstream.core.clickhouse import connect
from clickstream.core.settings import Settings
from collector.rejected import RejectedStore
from tests.conftest import ROOT, make_event

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
DAY = 86_400_000


def run_import(data_dir: Path, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLICKSTREAM_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "clickstream.cli", "import", str(path), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_import_history_twice_is_stored_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    old = make_event(ts=make_event()["ts"] - 30 * DAY, session_id="hist-1")  # older than the 72 h policy
    no_id = make_event(ts="2024-03-01T10:00:00Z", session_id="hist-2")
    del no_id["event_id"]
    enveloped = {"event": make_event(ts=make_event()["ts"] - 10 * DAY, session_id="hist-3"), "user_agent": UA}
    pending = {k: v for k, v in make_event(consent="pending").items() if k not in ("anonymous_id", "session_id")}
    lines = [orjson.dumps(old), orjson.dumps(no_id), orjson.dumps(enveloped), b"{not json",
             orjson.dumps(make_event(type="Bad Type")), orjson.dumps(make_event(ts=1000)), orjson.dumps(pending)]
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    first = run_import(data_dir, path, "--flush")
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["accepted"] == 3
    # an event sent before consent has no ids, and history has no request to derive them from
    assert summary["rejected"] == {"malformed_json": 1, "schema_violation": 1, "ts_too_old": 1, "consent_pending": 1}
    assert summary["flushed_rows"] == 3
    # the flush's and the fold's times are apart: the fold rebuilds the imported days' roll-ups after it
    assert summary["seconds_with_flush"] > 0 and summary["fold_seconds"] >= 0
    second = run_import(data_dir, path, "--flush")  # the same file again: the same event ids
    assert second.returncode == 0, second.stderr[-2000:]

    client = connect(Settings(data_dir=data_dir).resolved_clickhouse_url)
    try:
        rows = client.query("SELECT session_id, count(), any(browser) FROM events GROUP BY session_id "
                            "ORDER BY session_id").result_rows
        # folded by the import: every imported session is in its day's roll-up
        (folded,) = client.query("SELECT sum(sessions) FROM traffic_daily").result_rows[0]
    finally:
        client.close()
    assert [(r[0], r[1]) for r in rows] == [("hist-1", 1), ("hist-2", 1), ("hist-3", 1)]
    assert folded == 3
    assert dict((r[0], r[2]) for r in rows)["hist-3"] == "Firefox"
    kept = [e for e in RejectedStore(data_dir / "rejected").read_all()]
    assert sorted(e["reason"] for e in kept) == sorted(["malformed_json", "schema_violation", "ts_too_old",
                                                        "consent_pending"] * 2)
    assert all(e["message"].startswith("line ") for e in kept)
