"""Versioned and custom event schemas through `POST /collect` on a real `clickstream collector`
(uvicorn on a free port): an old version is accepted and upcast, the current one accepted, an
unknown one rejected and kept; custom props schemas reject bad props with the per-event error
shape. Outcomes are read where they land: the answer, the spool's bytes, rejected/, /metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from clickstream.core.spool import SpoolReader
from collector.rejected import RejectedStore
from collector.schemas import EventSchemas
from tests.conftest import ROOT, Server, make_event

JSON = {"Content-Type": "application/json"}


def spooled(data_dir: Path) -> dict[str, dict[str, Any]]:
    return {e["event_id"]: e for e in (orjson.loads(r.payload) for r in SpoolReader(data_dir / "spool").iter_all())}


def rejected(data_dir: Path) -> dict[str, dict[str, Any]]:
    return {e["event"]["event_id"]: e for e in RejectedStore(data_dir / "rejected").read_all() if e.get("event")}


def counts(client: httpx.Client, name: str, label: str) -> dict[str, float]:
    text = client.get("/metrics").text
    return {s.labels[label]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name}


def rejected_counts(client: httpx.Client) -> dict[str, float]:
    return counts(client, "clickstream_events_rejected_total", "reason")


def test_old_current_and_unknown_versions(server_factory: Callable[..., Server]) -> None:
    server = server_factory("collector")
    current = EventSchemas().current
    unversioned = make_event(title="old beacon")  # today's beacons: no `schema`, the oldest version
    old = make_event(schema="event/1-0-0", title="named 1-0-0")
    now = make_event(schema=current.short_name, seq=0)
    by_id = make_event(schema=f"https://clickstream.dev/schemas/event/{current.version}.json", seq=1)
    unknown = make_event(schema="event/9-0-0", seq=2)
    retired = make_event(schema="event/0-1-0")
    old_with_seq = make_event(schema="event/1-0-0", seq=3)  # 1-0-0 has no seq: a schema violation
    events = [unversioned, old, now, by_id, unknown, retired, old_with_seq]
    with server.client() as client:
        before = rejected_counts(client)
        response = client.post("/collect", content=orjson.dumps(events), headers={**JSON, "User-Agent": "UA/1"})
        after = rejected_counts(client)
        by_version = counts(client, "clickstream_events_schema_version_total", "version")
    assert by_version == {"1-0-0": 2, "1-1-0": 2}  # as sent, before the upcast
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (4, 3)
    assert [(e["index"], e["path"], e["reason"]) for e in body["errors"]] == [
        (4, "/schema", "unsupported_schema_version"), (5, "/schema", "unsupported_schema_version"),
        (6, "", "schema_violation")]
    assert "event/9-0-0" in body["errors"][0]["message"] and "event/1-0-0, event/1-1-0" in body["errors"][0]["message"]

    spool = spooled(server.data_dir)
    for sent in (unversioned, old, now, by_id):  # accepted, in the current shape: no `schema`, the rest as sent
        row = spool[sent["event_id"]]
        assert "schema" not in row
        assert {k: row[k] for k in sent if k != "schema"} == {k: v for k, v in sent.items() if k != "schema"}
        assert current.validator.is_valid({k: row[k] for k in sent if k != "schema"})
    assert [spool[e["event_id"]].get("seq") for e in (unversioned, now, by_id)] == [None, 0, 1]
    assert not {e["event_id"] for e in (unknown, retired, old_with_seq)} & set(spool)

    kept = rejected(server.data_dir)
    for sent, reason in ((unknown, "unsupported_schema_version"), (retired, "unsupported_schema_version"),
                         (old_with_seq, "schema_violation")):
        assert kept[sent["event_id"]]["event"] == sent  # kept as sent, with its reason
        assert kept[sent["event_id"]]["reason"] == reason
        assert kept[sent["event_id"]]["user_agent"] == "UA/1"
    assert after["unsupported_schema_version"] - before.get("unsupported_schema_version", 0) == 2
    assert after["schema_violation"] - before.get("schema_violation", 0) == 1


def test_a_request_of_only_unknown_versions_is_a_400_and_kept(server_factory: Callable[..., Server]) -> None:
    server = server_factory("collector")
    event = make_event(schema="event/2-0-0")
    with server.client() as client:
        response = client.post("/collect", content=orjson.dumps(event), headers=JSON)
    assert response.status_code == 400
    assert response.json()["errors"][0]["reason"] == "unsupported_schema_version"
    assert rejected(server.data_dir)[event["event_id"]]["event"] == event


def test_custom_event_schema_rejects_bad_props(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    folder = tmp_path / "custom-schemas"
    folder.mkdir()
    (folder / "signup_started.json").write_text(json.dumps(
        {"type": "object", "required": ["plan"], "properties": {"plan": {"enum": ["free", "pro"]}}}))
    server = server_factory("collector", custom_schemas_path=str(folder))
    good = make_event(type="signup_started", props={"plan": "pro"})
    bad = make_event(type="signup_started", props={"plan": "enterprise"})
    missing = make_event(type="signup_started", schema="event/1-1-0", seq=4)
    other = make_event(type="newsletter_joined", props={"plan": "enterprise"})  # unregistered: generic rules
    with server.client() as client:
        response = client.post("/collect", content=orjson.dumps([good, bad, missing, other]), headers=JSON)
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [(e["index"], e["path"], e["reason"]) for e in body["errors"]] == [
        (1, "/props/plan", "schema_violation"), (2, "/props", "schema_violation")]
    assert "signup_started" in body["errors"][0]["message"] and "enterprise" in body["errors"][0]["message"]
    assert set(spooled(server.data_dir)) == {good["event_id"], other["event_id"]}
    kept = rejected(server.data_dir)
    assert kept[bad["event_id"]]["event"] == bad and kept[missing["event_id"]]["event"] == missing


def test_a_bad_custom_schema_stops_the_collector_at_start_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "custom-schemas"
    folder.mkdir()
    (folder / "signup_started.json").write_text('{"type": "nope"}')
    env = {**os.environ, "CLICKSTREAM_DATA_DIR": str(tmp_path / "data"), "CLICKSTREAM_PORT": "1",
           "CLICKSTREAM_CUSTOM_SCHEMAS_PATH": str(folder)}
    done = subprocess.run([sys.executable, "-m", "clickstream.cli", "collector"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "CLICKSTREAM_CUSTOM_SCHEMAS_PATH" in done.stderr and "signup_started.json" in done.stderr
    assert "Traceback" not in done.stderr
