"""`clickstream import`: compressed input, several workers, GA4 BigQuery exports, progress and summary.

Outcomes are read where they land: the spool's bytes (SpoolReader), rejected/ (RejectedStore), and
`events` in a real chDB after `--flush`. Expected values are computed by the tests from their own
input, not by the importer.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from clickstream.core.clickhouse import connect
from clickstream.core.settings import Settings
from clickstream.core.spool import SpoolReader
from collector.importer import IMPORT_NAMESPACE, import_event_id, import_file
from collector.rejected import RejectedStore
from tests.conftest import ROOT, make_event

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

DAY = 86_400_000


def history(n: int) -> tuple[bytes, list[str], dict[int, str]]:
    """n JSONL lines of old events (every 7th invalid in some way): the file, the accepted event ids
    in file order, and the rejection reason by line number."""
    lines: list[bytes] = []
    accepted: list[str] = []
    rejected: dict[int, str] = {}
    base = make_event()["ts"] - 40 * DAY
    for i in range(n):
        number = i + 1
        event = make_event(ts=base + i, session_id=f"h{i // 5}", anonymous_id=f"a{i // 15}")
        if i % 7 == 3:
            lines.append(b'{"type": "page_view", "broken": ')
            rejected[number] = "malformed_json"
        elif i % 7 == 5:
            event["type"] = "Not A Type"
            lines.append(orjson.dumps(event))
            rejected[number] = "schema_violation"
        else:
            if i % 2:
                del event["event_id"]  # the importer makes one from the line's bytes
            line = orjson.dumps(event)
            lines.append(line)
            accepted.append(event.get("event_id") or str(uuid.uuid5(IMPORT_NAMESPACE, line.decode())))
    return b"\n".join(lines) + b"\n", accepted, rejected


@pytest.mark.parametrize("compression", ["plain", "gzip", "zstd"])
def test_chunks_on_several_workers_keep_file_order_and_line_numbers(tmp_path: Path, compression: str) -> None:
    raw, accepted, rejected = history(3000)
    path = tmp_path / f"history.jsonl.{compression}"
    path.write_bytes({"plain": raw, "gzip": gzip.compress(raw), "zstd": zstd.compress(raw)}[compression])
    settings = Settings(data_dir=tmp_path / "data")
    result = import_file(settings, path, workers=2, chunk_bytes=16 * 1024, progress=False)

    assert result.accepted == len(accepted) and result.lines == 3000
    assert dict(result.rejected) == {reason: list(rejected.values()).count(reason) for reason in set(rejected.values())}
    assert len(result.segments) > 5  # many chunks, so several workers took part
    records = list(SpoolReader(settings.spool_dir).iter_all())
    assert [orjson.loads(r.payload)["event_id"] for r in records] == accepted  # file order
    assert [(r.segment_id, r.offset) for r in records] == sorted((r.segment_id, r.offset) for r in records)
    kept = list(RejectedStore(settings.rejected_dir).read_all())
    assert [(e["index"], e["reason"]) for e in kept] == sorted(rejected.items())
    assert all(e["message"].startswith(f"line {e['index']}: ") for e in kept)


def test_import_event_id_is_uuid5_of_the_line() -> None:
    for line in (b'{"a": 1}', "{\"t\": \"é ü 東京\"}".encode()):
        assert import_event_id(line) == str(uuid.uuid5(IMPORT_NAMESPACE, line.decode()))


def ga4_row(i: int, **extra: Any) -> dict[str, Any]:
    """A row of a GA4 BigQuery export (https://developers.google.com/analytics/bigquery/event-schema),
    integers as strings as BigQuery writes INT64 in JSON."""
    row: dict[str, Any] = {
        "event_date": "20251124",
        "event_timestamp": str(1_764_000_000_000_000 + i * 1_500_000),
        "event_name": "page_view" if i % 3 else "scroll",
        "event_params": [
            {"key": "ga_session_id", "value": {"int_value": "1764000000"}},
            {"key": "page_location", "value": {"string_value": f"https://shop.example/p{i}?utm_source=ignored"}},
            {"key": "page_referrer", "value": {"string_value": "https://www.google.com/"}},
            {"key": "page_title", "value": {"string_value": f"Page {i}"}},
            {"key": "percent_scrolled", "value": {"int_value": "90"}},
            {"key": "engagement_time_msec", "value": {"int_value": str(1000 + i)}},
            {"key": "value", "value": {"double_value": 2.5}},
        ],
        "user_pseudo_id": "1234567.7654321",
        "device": {"category": "mobile", "operating_system": "iOS", "operating_system_version": "iOS 17.4",
                   "language": "de-de", "web_info": {"browser": "Safari", "browser_version": "17.4"}},
        "collected_traffic_source": {"manual_source": "newsletter", "manual_medium": "email",
                                     "manual_campaign_name": "spring"},
        "traffic_source": {"source": "(direct)", "medium": "(none)", "name": "(direct)"},
    }
    row.update(extra)
    return row


def test_ga4_export_lands_in_events_through_the_documented_mapping(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    app_event = ga4_row(9)
    app_event["event_params"] = [p for p in app_event["event_params"] if p["key"] != "page_location"]
    rows = [ga4_row(0), ga4_row(1), ga4_row(2, collected_traffic_source=None), app_event]
    path = tmp_path / "ga4.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(r) for r in rows) + b"\n"))
    env = {**os.environ, "CLICKSTREAM_DATA_DIR": str(data_dir)}
    done = subprocess.run([sys.executable, "-m", "clickstream.cli", "import", str(path), "--format", "ga4", "--flush"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["accepted"], summary["rejected"], summary["flushed_rows"]) == (3, {"schema_violation": 1}, 3)

    client = connect(Settings(data_dir=data_dir).resolved_clickhouse_url)
    try:
        got = client.query(
            "SELECT type, toUnixTimestamp64Milli(ts), site_id, anonymous_id, session_id, path, referrer_host, title, "
            "utm_source, utm_medium, utm_campaign, props, lang, browser, browser_version, os, device_type, is_bot "
            "FROM events ORDER BY ts").result_rows
    finally:
        client.close()
    expected = []
    for i, row in enumerate(rows[:3]):
        campaign = ("newsletter", "email", "spring") if i != 2 else ("ignored", "", "")  # 2: from the URL
        expected.append((row["event_name"], int(row["event_timestamp"]) // 1000, "shop.example", "1234567.7654321",
                         "1234567.7654321:1764000000", f"/p{i}", "google.com", f"Page {i}", *campaign,
                         {"percent_scrolled": "90", "engagement_time_msec": str(1000 + i), "value": "2.5"},
                         "de-de", "Safari", "17.4", "iOS", "mobile", 0))
    assert got == expected
    [kept] = RejectedStore(data_dir / "rejected").read_all()
    assert (kept["index"], kept["reason"], kept["path"]) == (4, "schema_violation", "/event_params/page_location")


def test_progress_bar_and_summary(tmp_path: Path) -> None:
    raw, accepted, _ = history(200)
    path = tmp_path / "h.jsonl"
    path.write_bytes(raw)
    env = {**os.environ, "CLICKSTREAM_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "clickstream.cli", "import", str(path), "--progress"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["accepted"] == len(accepted) and summary["lines"] == 200 and summary["bytes"] == len(raw)
    assert f"{len(accepted)} events" in done.stderr and "events/s" in done.stderr
