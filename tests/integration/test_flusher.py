"""Flusher on real chDB and real spool files: exactly once, failures, dead letters."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from clickstream.core.clickhouse import ClickHouseSink, Rows, connect, migrate
from clickstream.core.settings import Settings
from clickstream.core.spool import SpoolReader, SpoolWriter
from collector.pipeline import event_id_key, ingest_row, process, request_stamp
from collector.schemas import EventSchemas
from flusher.loop import Flusher
from reports.fold import fold
from tests.conftest import ROOT, make_event, now_ms

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"


def stamped(**overrides: Any) -> dict[str, Any]:
    """An event as the collector writes it to the spool (ts normalised, received_at, UA)."""
    event = make_event(**overrides)
    event.update(received_at=now_ms(), user_agent=UA)
    return event


def session_events(n_sessions: int, per_session: int) -> list[dict[str, Any]]:
    base = now_ms() - 3_600_000
    events = []
    for s in range(n_sessions):
        for i in range(per_session):
            # every fifth event an engagement report or a purchase: session_engagement gets rows too
            kind = {1: ("engagement", {"engaged_ms": 1500, "scroll_depth": 40}),
                    3: ("purchase", {"revenue": 9.5, "currency": "EUR"})}.get(i % 5, ("page_view", None))
            events.append(stamped(
                session_id=f"s{s}", anonymous_id=f"a{s}", ts=base + s * 1000 + i,
                url=f"https://example.com/p{i}?utm_source=google&utm_medium=cpc",
                variants={"hero": "B" if s % 2 else "control"}, type=kind[0], **({"props": kind[1]} if kind[1] else {}),
            ))
    return events


#: The spool format `spool` writes, set for each test by the `spool_format` fixture: every test
#: runs against block records (what the collector writes) and against records of the previous
#: format (a spool left by the previous version, drained after an upgrade).
_FORMAT = {"name": "block"}


@pytest.fixture(autouse=True, params=["block", "legacy"])
def spool_format(request: pytest.FixtureRequest) -> Iterator[str]:
    _FORMAT["name"] = request.param
    yield request.param
    _FORMAT["name"] = "block"


def block_of(event: dict[str, Any]) -> tuple[list[bytes], list[bytes]]:
    """One event as the collector spools a request of one event: (its id, its events_ingest row)."""
    sent = {k: v for k, v in event.items() if k not in ("user_agent", "received_at")}
    stamp = request_stamp(event["received_at"], event["user_agent"], "")
    return [event_id_key(sent["event_id"])], [ingest_row(orjson.dumps(sent), stamp)]


def spool(data_dir: Path, events: list[dict[str, Any]], per_segment: int = 0) -> list[str]:
    """Write events to sealed spool segments (per_segment records each; 0: one segment), one
    request of one event each (block format) or one record each (previous format)."""
    writer = SpoolWriter(data_dir / "spool", fsync_interval_ms=0).open()
    sealed = []
    chunk = per_segment or len(events)
    for start in range(0, len(events), chunk):
        if _FORMAT["name"] == "block":
            for event in events[start : start + chunk]:
                writer.append_block(*block_of(event))
        else:
            writer.append([orjson.dumps(e) for e in events[start : start + chunk]])
        segment = writer.seal_active()
        assert segment
        sealed.append(segment)
    writer.close()
    return sealed


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def client(data_dir: Path) -> Iterator[Client]:
    c = connect(f"chdb://{data_dir / 'clickhouse'}")
    migrate(c)
    yield c
    c.close()


def settings(data_dir: Path, **kw: Any) -> Settings:
    return Settings(data_dir=data_dir, flush_retry_max_s=0.05, **kw)


def counts(client: Client) -> dict[str, Any]:
    """Everything an insert reaches, summed: raw rows and each aggregate; the views after a fold (the
    roll-ups they read are rebuilt by it, as serve does every CLICKSTREAM_FOLD_INTERVAL_S)."""
    fold(client)
    q = client.query
    return {
        "fact_events": q("SELECT sum(events) FROM session_facts").result_rows[0][0],
        "events": q("SELECT count() FROM events").result_rows[0][0],
        "distinct_event_ids": q("SELECT uniqExact(event_id) FROM events").result_rows[0][0],
        "session_events": q("SELECT sum(events) FROM sessions").result_rows[0][0],
        "session_pageviews": q("SELECT sum(pageviews) FROM v_sessions").result_rows[0][0],
        "sessions": q("SELECT count() FROM v_sessions").result_rows[0][0],
        "exposure_rows": q("SELECT count() FROM variant_exposures").result_rows[0][0],
        "engagement": q("SELECT sum(engaged_ms), sum(passive_events), toString(sumMap(revenue)) "
                        "FROM session_engagement").result_rows[0],
        "lift_visitors": q("SELECT sum(visitors) FROM v_variant_lift").result_rows[0][0],
    }


def test_flush_enriches_and_deletes_segment(data_dir: Path, client: Client) -> None:
    events = session_events(3, 4)
    spool(data_dir, events)
    flusher = Flusher(settings(data_dir), client)
    assert flusher.flush_once() == 12
    assert SpoolReader(data_dir / "spool").sealed_segments() == []
    row = client.query(
        "SELECT path, channel, utm_source, browser, os, device_type, is_bot, variants FROM events "
        "WHERE event_id = {id:UUID}", parameters={"id": events[0]["event_id"]}).result_rows[0]
    assert row == ("/p0", "paid_search", "google", "Firefox", "Linux", "desktop", 0, {"hero": "control"})
    assert counts(client)["sessions"] == 3


def test_same_spool_range_twice_changes_nothing(data_dir: Path, client: Client) -> None:
    events = session_events(20, 5)
    segments = spool(data_dir, events, per_segment=30)
    backup = data_dir / "backup"
    shutil.copytree(data_dir / "spool", backup, ignore=shutil.ignore_patterns("*.lock"))
    flusher = Flusher(settings(data_dir, flush_max_rows=7), client)
    assert flusher.flush_once() == 100
    before = counts(client)
    assert before["events"] == before["distinct_event_ids"] == before["session_events"] == 100
    assert before["engagement"] == (20 * 1500, 20, "{'EUR':190}")  # 20 reports of 1.5 s, 20 purchases of 9.5
    for segment in segments:  # the same ranges come back, as after a crash before the delete
        shutil.copy(backup / f"{segment}.seg", data_dir / "spool" / f"{segment}.seg")
    assert flusher.flush_once() == 100  # inserted again, and dropped by ClickHouse as duplicates
    assert counts(client) == before


def test_missing_window_on_a_view_target_double_counts(client: Client) -> None:
    """Negative control: the same token twice, with and without the window on the MV target."""
    client.command("CREATE TABLE agg_no_window (k String, n SimpleAggregateFunction(sum, UInt64)) "
                   "ENGINE = AggregatingMergeTree ORDER BY k")
    client.command("CREATE MATERIALIZED VIEW agg_no_window_mv TO agg_no_window AS "
                   "SELECT session_id AS k, count() AS n FROM events GROUP BY k")
    sink = ClickHouseSink(client)
    row = orjson.dumps({"site_id": "x", "ts": "1700000000.000", "event_id": str(uuid.uuid4()), "type": "page_view",
                        "session_id": "s", "anonymous_id": "a", "url": "https://x/", "path": "/"})
    sink.insert("events", row, "same-token")
    sink.insert("events", row, "same-token")
    assert client.query("SELECT count() FROM events").result_rows[0][0] == 1
    assert client.query("SELECT sum(events) FROM sessions").result_rows[0][0] == 1  # window set: once
    assert client.query("SELECT sum(n) FROM agg_no_window").result_rows[0][0] == 2  # no window: twice


def test_sigkill_between_insert_and_ack_then_restart(data_dir: Path, tmp_path: Path) -> None:
    events = session_events(10, 10)
    spool(data_dir, events, per_segment=25)
    script = tmp_path / "dying_flusher.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from clickstream.core.settings import Settings
        from clickstream.core.clickhouse import connect, migrate
        from flusher.loop import Flusher
        data_dir = Path({str(data_dir)!r})
        client = connect(f"chdb://{{data_dir / 'clickhouse'}}")
        migrate(client)
        flusher = Flusher(Settings(data_dir=data_dir), client)
        done = []
        def die_on_second_ack(segment_id):
            done.append(segment_id)
            if len(done) == 2:  # segment 2 is in ClickHouse, its delete never happens
                os.kill(os.getpid(), signal.SIGKILL)
            type(flusher.reader).mark_done(flusher.reader, segment_id)
        flusher.reader.mark_done = die_on_second_ack
        flusher.flush_once()
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert len(SpoolReader(data_dir / "spool").sealed_segments()) == 3  # segments 2, 3, 4 left
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    try:
        assert client.query("SELECT count() FROM events").result_rows[0][0] == 50
        Flusher(settings(data_dir), client).flush_once()
        result = counts(client)
        assert result["events"] == result["distinct_event_ids"] == result["session_events"] == 100
        assert result["fact_events"] == 100  # the roll-ups after the crash and retry: a recount
        assert result["sessions"] == 10
        assert SpoolReader(data_dir / "spool").sealed_segments() == []
    finally:
        client.close()


class FlakySink:
    """A real ClickHouse sink behind a switch: raises connection errors while `down` is set."""

    def __init__(self, client: Client) -> None:
        self.real = ClickHouseSink(client)
        self.down = threading.Event()
        self.down.set()
        self.failures = 0

    def insert(self, table: str, rows: Rows, token: str) -> None:
        if self.down.is_set():
            self.failures += 1
            raise OperationalError("connection refused (ClickHouse down in this test)")
        self.real.insert(table, rows, token)


def test_clickhouse_down_keeps_data_in_spool_then_drains(data_dir: Path, client: Client) -> None:
    events = session_events(5, 10)
    spool(data_dir, events, per_segment=10)
    sink = FlakySink(client)
    flusher = Flusher(settings(data_dir), client, sink=sink)
    flusher.start()
    try:
        while sink.failures < 5:
            threading.Event().wait(0.01)
        assert len(SpoolReader(data_dir / "spool").sealed_segments()) == 5
        assert client.query("SELECT count() FROM events").result_rows[0][0] == 0
        sink.down.clear()
        deadline = threading.Event()
        for _ in range(600):
            if not SpoolReader(data_dir / "spool").sealed_segments():
                break
            deadline.wait(0.05)
    finally:
        flusher.stop()
    result = counts(client)
    assert result["events"] == result["distinct_event_ids"] == result["session_events"] == 50
    assert result["fact_events"] == 50
    assert flusher.metrics.retries._value.get() >= 5


def test_poison_row_goes_to_dead_letters_rest_lands(data_dir: Path, client: Client) -> None:
    events = session_events(4, 25)
    poison = stamped(ts=1_000, session_id="poison")  # valid JSON Schema, refused by the CHECK constraint
    events.insert(37, poison)
    spool(data_dir, events)
    flusher = Flusher(settings(data_dir), client)
    assert flusher.flush_once() == 100
    assert client.query("SELECT count() FROM events").result_rows[0][0] == 100
    dead = client.query("SELECT error_code, payload, spool_offset FROM dead_letters").result_rows
    assert len(dead) == 1
    assert dead[0][0] == 469
    assert orjson.loads(dead[0][1])["event_id"] == poison["event_id"]
    assert flusher.metrics.dead_letters.labels(reason="clickhouse_rejected")._value.get() == 1
    assert SpoolReader(data_dir / "spool").sealed_segments() == []


def test_corrupt_sealed_segment_is_quarantined_after_its_good_prefix(data_dir: Path, client: Client) -> None:
    events = session_events(1, 10)
    (segment,) = spool(data_dir, events)
    path = data_dir / "spool" / f"{segment}.seg"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # flip a byte inside the last record's payload
    path.write_bytes(bytes(data))
    flusher = Flusher(settings(data_dir), client)
    assert flusher.flush_once() == 9
    assert (data_dir / "spool" / "corrupt" / f"{segment}.seg").exists()
    assert flusher.metrics.corrupt._value.get() == 1


def test_client_retry_of_the_same_event_id_is_counted_once(data_dir: Path, client: Client) -> None:
    events = session_events(2, 5)
    spool(data_dir, events)
    retried = [dict(e) for e in events[3:7]]  # a browser re-sends 4 events whose 202 it never saw
    spool(data_dir, retried)
    flusher = Flusher(settings(data_dir), client)
    flusher.flush_once()
    assert counts(client)["events"] == counts(client)["distinct_event_ids"] == 10
    assert flusher.metrics.duplicates._value.get() == 4
    # after a restart the flusher still knows them (rebuilt from ClickHouse)
    spool(data_dir, [dict(e) for e in events[:2]])
    restarted = Flusher(settings(data_dir), client)
    restarted.flush_once()
    assert counts(client)["events"] == 10
    assert restarted.metrics.duplicates._value.get() == 2


def test_integer_fields_sent_as_floats_land_as_integers(data_dir: Path, client: Client) -> None:
    """The collector's output for `seq: 3.0` (valid JSON Schema) is inserted, not dead-lettered."""
    sent = [make_event(seq=3.0, screen={"w": 1280.0, "h": 720.0}), make_event(seq=4)]
    outcome = process(orjson.loads(orjson.dumps(sent)), EventSchemas(), received_at_ms=now_ms(), user_agent=UA,
                      ip_hash="", max_age_ms=3_600_000, max_skew_ms=300_000)
    assert outcome.errors == []
    writer = SpoolWriter(data_dir / "spool", fsync_interval_ms=0).open()
    writer.append_block(outcome.ids, outcome.rows())
    writer.seal_active()
    writer.close()
    assert Flusher(settings(data_dir), client).flush_once() == 2
    rows = client.query("SELECT seq, screen_w, screen_h FROM events ORDER BY seq").result_rows
    assert rows == [(3, 1280, 720), (4, 0, 0)]
    assert client.query("SELECT count() FROM dead_letters").result_rows[0][0] == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lead", ["", "x", "xx", "xxx"])
def test_a_poison_row_whose_error_chdb_cannot_decode_is_dead_lettered(data_dir: Path, client: Client,
                                                                      lead: str) -> None:
    """A parse error quotes the rows after it cut at a byte count; cut inside a UTF-8 character, chDB
    cannot decode the message (no error code). Both cuts (with and without `lead`) are data errors:
    dead-lettered, the rest lands, nothing retried forever behind the flusher's lock."""
    events = session_events(1, 5)
    poison = stamped()
    poison["seq"] = 1.5  # not an integer: the collector refuses it; written here as a spool could hold it
    poison["title"] = lead + "é" * 400  # right after the error: the message quotes it
    events.insert(2, poison)
    spool(data_dir, events)
    flusher = Flusher(settings(data_dir), client)
    assert flusher.flush_once() == 5
    dead = client.query("SELECT payload FROM dead_letters").result_rows
    assert [orjson.loads(row[0])["event_id"] for row in dead] == [poison["event_id"]]
    assert flusher.metrics.dead_letters.labels(reason="clickhouse_rejected")._value.get() == 1
