"""A spool written by the previous version (one JSON record per event) drains after an upgrade.

tests/fixtures/spool_v1/ was written by the previous collector's code (`SpoolWriter.append` of
`collector.pipeline.process` records, at commit 30ae4fa): two sealed segments and the active one
as a crash left it, with a torn last record. It holds events 0-9 of two visitors, a batch of
three, a crawler, and a client retry of event 2. Expected values come from the fixture's bytes
read by this test's own frame parser, not from the code under test.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import httpx
import orjson

from tests.conftest import ROOT, Server, make_event, sql_rows, start_server, wait_for

FIXTURE = ROOT / "tests" / "fixtures" / "spool_v1"
SITE = "upgrade.example"


def old_records() -> list[tuple[str, int, dict[str, object]]]:
    """(segment id, byte offset, record) of every complete record in the fixture, in spool order."""
    out = []
    for path in sorted(FIXTURE.iterdir()):
        data = path.read_bytes()
        pos = 0
        while pos + 8 <= len(data):
            (length,) = struct.unpack_from("<I", data, pos)
            if pos + 8 + length > len(data):
                break  # the torn tail
            out.append((path.stem, pos, orjson.loads(data[pos + 8 : pos + 8 + length])))
            pos += 8 + length
    return out


def test_a_previous_version_spool_drains_after_an_upgrade(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(FIXTURE, data_dir / "spool")
    records = old_records()
    assert len(records) == 11  # events 0-9 and the retry of event 2
    first_seen: dict[str, tuple[str, int, dict[str, object]]] = {}
    for segment, offset, record in records:
        first_seen.setdefault(str(record["event_id"]), (segment, offset, record))

    server: Server = start_server("serve", data_dir, {"CLICKSTREAM_SQL_PASSWORD": "upgrade"}, ready_path="/readyz")
    try:
        count = f"SELECT count() FROM events WHERE site_id = '{SITE}'"
        wait_for(lambda: sql_rows(server, count) == [[10]], what="the old spool in events")
        new = make_event(site_id=SITE, session_id="v1-s0", anonymous_id="v1-a0", url=f"https://{SITE}/after")
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/collect", content=orjson.dumps(new),
                             headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"}).status_code == 202
            wait_for(lambda: sql_rows(server, count) == [[11]], what="a new event after the upgrade")
            metrics = http.get("/metrics").text
        rows = sql_rows(server, "SELECT toString(event_id), spool_segment, spool_offset, type, browser, is_bot "
                        f"FROM events WHERE site_id = '{SITE}' ORDER BY spool_segment, spool_offset")
    finally:
        assert server.stop() == 0
    old_rows = {row[0]: row for row in rows if row[0] != new["event_id"]}
    assert set(old_rows) == set(first_seen)  # every old event once; the retry dropped
    for event_id, (segment, offset, record) in first_seen.items():
        _, got_segment, got_offset, got_type, browser, is_bot = old_rows[event_id]
        assert (got_segment, int(got_offset), got_type) == (segment, offset, record["type"])
        crawler = "Googlebot" in str(record["user_agent"])
        assert (browser == "Firefox", is_bot) == (not crawler, int(crawler))
    assert "clickstream_flusher_duplicates_total 1.0" in metrics
    assert "clickstream_spool_torn_bytes_cut_total 11.0" in metrics
    assert [r[0] for r in rows][-1] == new["event_id"]  # a later segment: after the old ones in spool order
    assert not [p for p in (data_dir / "spool").iterdir() if p.suffix in (".seg", ".open")]


def test_batches_the_previous_version_inserted_before_a_crash_are_not_counted_twice(tmp_path: Path) -> None:
    """The previous flusher inserted the first two batches of a segment (its tokens: first to last
    row sent) and died before deleting it; after the upgrade the segment is flushed again."""
    from clickstream.core.clickhouse import ClickHouseSink, connect, migrate
    from clickstream.core.settings import Settings
    from clickstream.core.spool import SpoolReader, SpoolWriter, position_tail
    from flusher import legacy
    from flusher.loop import Flusher

    data_dir = tmp_path / "data"
    ua = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
    events = [{**make_event(site_id=SITE, session_id=f"c{i}"), "user_agent": ua, "received_at": make_event()["ts"]}
              for i in range(10)]
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    migrate(client)
    try:
        sink = ClickHouseSink(client)
        first = events[0]  # flushed earlier from another segment; record 0 below is its client retry
        earlier = orjson.dumps(first)
        sink.insert("events_ingest", legacy.ingest_line(earlier, position_tail("00000000000000001-00000000"), 0,
                                                        legacy.agent_fields(legacy.record_keys(earlier)[1])), "x")
        writer = SpoolWriter(data_dir / "spool", fsync_interval_ms=0).open()
        writer.append([orjson.dumps(e) for e in events])  # the previous format: one record per event
        segment = writer.seal_active()
        writer.close()
        assert segment
        records = SpoolReader(data_dir / "spool").records(SpoolReader(data_dir / "spool").sealed_segments()[0])
        tail = position_tail(segment)
        for batch in (records[1:4], records[4:8]):  # what the previous version sent (record 0: a retry)
            body = b"\n".join(legacy.ingest_line(r.payload, tail, r.offset,
                                                 legacy.agent_fields(legacy.record_keys(r.payload)[1]))
                              for r in batch)
            sink.insert("events_ingest", body, f"{segment}:{batch[0].offset}-{batch[-1].end}")
        assert client.query("SELECT count() FROM events").result_rows == [(8,)]

        flusher = Flusher(Settings(data_dir=data_dir, flush_max_rows=4), client)
        flusher.flush_once()
        assert client.query("SELECT count(), uniqExact(event_id) FROM events").result_rows == [(10, 10)]
        assert client.query("SELECT sum(events) FROM sessions").result_rows == [(10,)]
        assert flusher.metrics.duplicates._value.get() == 1
    finally:
        client.close()
