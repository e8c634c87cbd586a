"""`clickstream replay-rejected`: events a real collector rejected are replayed after their schema was
relaxed, into the spool exactly once (repeated runs, crashes at each step), and from there into
ClickHouse once; the rest stay with their reason (collector/replay.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from clickstream.core.cluster import open_configured
from clickstream.core.settings import Settings
from clickstream.core.spool import SpoolReader
from collector.rejected import RejectedStore
from collector.replay import LEDGER, LEDGER_DIR, replay_event_id
from flusher.loop import Flusher
from tests.conftest import ROOT, Server, make_event, now_ms

JSON = {"Content-Type": "application/json"}
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
STRICT = {"type": "object", "required": ["plan"], "properties": {"plan": {"enum": ["free", "pro"]}}}
RELAXED = {"type": "object", "required": ["plan"], "properties": {"plan": {"enum": ["free", "pro", "enterprise"]}}}


def run_replay(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "CLICKSTREAM_DATA_DIR": str(data_dir),
                **{f"CLICKSTREAM_{k.upper()}": v for k, v in env.items()}}
    return subprocess.run([sys.executable, "-m", "clickstream.cli", "replay-rejected", *args],
                          capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=300)


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def spool_events(data_dir: Path) -> list[dict[str, Any]]:
    return [orjson.loads(r.payload) for r in SpoolReader(data_dir / "spool").iter_all()]


def test_relaxed_schema_replays_rejected_events_once_into_clickhouse(
        server_factory: Callable[..., Server], tmp_path: Path) -> None:
    schemas_dir = tmp_path / "custom"
    schemas_dir.mkdir()
    (schemas_dir / "signup_started.json").write_text(json.dumps(STRICT))
    data_dir = tmp_path / "data"
    server = server_factory("collector", data_dir=data_dir, custom_schemas_path=str(schemas_dir))
    with_id = make_event(type="signup_started", props={"plan": "enterprise"}, session_id="replay-1")
    without_id = make_event(type="signup_started", props={"plan": "enterprise"}, session_id="replay-2")
    del without_id["event_id"]
    unknown = make_event(schema="event/3-0-0", session_id="replay-3")
    accepted = make_event(session_id="replay-0")
    with server.client() as client:
        sent_at = now_ms()
        answer = client.post("/collect", content=orjson.dumps([accepted, with_id, without_id, unknown]),
                             headers={**JSON, "User-Agent": FIREFOX})
        assert answer.status_code == 202 and answer.json()["rejected"] == 3
        assert client.post("/collect", content=b"{not json", headers=JSON).status_code == 400
    server.stop()
    assert len(spool_events(data_dir)) == 1

    # Before the schema is relaxed nothing passes, and nothing is marked replayed.
    before = summary(run_replay(data_dir, "--reason", "schema_violation", custom_schemas_path=str(schemas_dir)))
    assert (before["replayed"], before["still_rejected"]) == (0, {"schema_violation": 2})

    (schemas_dir / "signup_started.json").write_text(json.dumps(RELAXED))
    first = summary(run_replay(data_dir, "--reason", "schema_violation", "--since", str(sent_at - 1000),
                               custom_schemas_path=str(schemas_dir)))
    assert (first["replayed"], first["filtered_out"], first["still_rejected"]) == (2, 2, {})
    again = summary(run_replay(data_dir, custom_schemas_path=str(schemas_dir)))
    assert (again["replayed"], again["already_replayed"]) == (0, 2)
    assert again["still_rejected"] == {"unsupported_schema_version": 1, "not_replayable": 1}
    later = summary(run_replay(data_dir, "--since", str(now_ms() + 60_000), custom_schemas_path=str(schemas_dir)))
    assert (later["replayed"], later["already_replayed"], later["filtered_out"]) == (0, 2, 2)

    spooled = spool_events(data_dir)
    replayed = [e for e in spooled if e["type"] == "signup_started"]
    assert sorted(e["session_id"] for e in replayed) == ["replay-1", "replay-2"]
    kept = {(e.get("event") or {}).get("session_id"): e for e in RejectedStore(data_dir / "rejected").read_all()}
    for event in replayed:  # the collector's stamps of the original request, the id given or derived
        entry = kept[event["session_id"]]
        assert event["received_at"] == entry["received_at"] and event["user_agent"] == FIREFOX
        assert event["browser"] == "Firefox"
        assert {k: event[k] for k in entry["event"]} == entry["event"]
    [derived] = [e for e in replayed if e["session_id"] == "replay-2"]
    [(key, line)] = [(f"{p.name}:{n}", line) for p in (data_dir / "rejected").glob("rejected-*.jsonl")
                     for n, line in enumerate(p.read_bytes().splitlines(), 1) if b'"replay-2"' in line]
    assert derived["event_id"] == replay_event_id(key, line)
    # rejected/ keeps every entry as written; the ledger says which were replayed
    assert Counter(e["reason"] for e in RejectedStore(data_dir / "rejected").read_all()) == \
        {"schema_violation": 2, "unsupported_schema_version": 1, "malformed_json": 1}

    settings = Settings(data_dir=data_dir)
    ch = open_configured(settings)
    try:
        flusher = Flusher(settings, ch)
        flusher.start()
        flusher.stop()
        assert summary(run_replay(data_dir, custom_schemas_path=str(schemas_dir)))["replayed"] == 0
        rows = ch.query("SELECT session_id, count() FROM events GROUP BY session_id ORDER BY session_id"
                            ).result_rows
    finally:
        ch.close()
    assert rows == [("replay-0", 1), ("replay-1", 1), ("replay-2", 1)]


def write_rejected(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """n dead letters as the collector keeps them (reason schema_violation, events now valid)."""
    store = RejectedStore(data_dir / "rejected")
    events = [make_event(session_id=f"crash-{i}") for i in range(n)]
    for i, event in enumerate(events):
        if i % 2:
            del event["event_id"]
    store.add([{"reason": "schema_violation", "index": i, "path": "", "message": "old rule", "event": e,
                "user_agent": FIREFOX} for i, e in enumerate(events)])
    store.close()
    return events


def crash_run(data_dir: Path, step: str, at: int) -> subprocess.CompletedProcess[str]:
    """replay-rejected with segments of 2 events, killed (os._exit, no clean-up) at the `at`-th `step`."""
    code = f"""
import os, sys
import collector.replay as r
from clickstream.core.settings import Settings
r.SEGMENT_EVENTS = 2
seen = []
def on_step(step):
    seen.append(step)
    if step == {step!r} and seen.count(step) == {at}:
        os._exit(9)
r.replay_rejected(Settings(data_dir={str(data_dir)!r}), on_step=on_step, progress=False)
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize(("step", "at", "recovered", "discarded"), [
    ("written", 1, 0, 1),     # the first segment written, not committed: written again
    ("committed", 2, 1, 0),   # the second committed, not published: published by the next run
])
def test_a_crash_at_any_step_still_replays_every_event_exactly_once(tmp_path: Path, step: str, at: int,
                                                                    recovered: int, discarded: int) -> None:
    data_dir = tmp_path / "data"
    events = write_rejected(data_dir, 5)
    crashed = crash_run(data_dir, step, at)
    assert crashed.returncode == 9, crashed.stderr[-2000:]
    hidden = list((data_dir / "spool").glob(".*.replay"))
    assert len(hidden) == 1  # the segment the crash left

    resumed = summary(run_replay(data_dir))
    assert (resumed["recovered_segments"], resumed["discarded_segments"]) == (recovered, discarded)
    assert not list((data_dir / "spool").glob(".*"))
    assert summary(run_replay(data_dir))["replayed"] == 0
    spooled = spool_events(data_dir)
    assert sorted(e["session_id"] for e in spooled) == sorted(e["session_id"] for e in events)
    assert len({e["event_id"] for e in spooled}) == 5
    given = {e["event_id"] for e in events if "event_id" in e}
    assert given <= {e["event_id"] for e in spooled}
    ledger = [orjson.loads(line) for line in (data_dir / "rejected" / LEDGER_DIR / LEDGER).read_bytes().splitlines()]
    assert sorted(k for record in ledger for k in record["keys"]) == sorted(
        f"{p.name}:{n}" for p in (data_dir / "rejected").glob("rejected-*.jsonl") for n in range(1, 6))


def test_progress_bar_and_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_rejected(data_dir, 3)
    done = run_replay(data_dir, "--progress")
    assert summary(done)["replayed"] == 3
    assert "replay-rejected" in done.stderr and "3/3" in done.stderr and "3 replayed" in done.stderr


def test_bad_options_are_named(tmp_path: Path) -> None:
    done = run_replay(tmp_path / "data", "--reason", "no_such_reason")
    assert done.returncode == 2 and "unknown reason no_such_reason" in done.stderr
    done = run_replay(tmp_path / "data", "--since", "yesterday")
    assert done.returncode == 2 and "--since" in done.stderr
    ok = summary(run_replay(tmp_path / "data", "--since", "2026-01-01"))
    assert ok["replayed"] == 0
