"""The rows the collector spools (block records, clickstream.core.spool) and the previous format's
records the flusher still reads (flusher.legacy)."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickstream.core.spool import (
    EVENT_ID_BYTES,
    HEADER,
    block_at,
    block_payload,
    frame,
    frames,
    position_tail,
    records_of,
)
from clickstream.core.useragent import agent
from collector.pipeline import process
from collector.schemas import EventSchemas
from flusher import legacy

VALIDATOR = EventSchemas()


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"type": "page_view", "site_id": "example.com", "anonymous_id": "a",
                               "session_id": "s", "ts": int(time.time() * 1000), "url": "https://example.com/",
                               "event_id": str(uuid.uuid4())}
    base.update(overrides)
    return base


def rows(events: list[dict[str, object]], user_agent: str) -> tuple[list[bytes], list[bytes]]:
    now = int(time.time() * 1000)
    out = process(events, VALIDATOR, received_at_ms=now, user_agent=user_agent, ip_hash="abc",
                  max_age_ms=3_600_000, max_skew_ms=300_000)
    assert not out.errors
    return out.ids, out.rows()


@given(user_agent=st.text(max_size=80), upper=st.booleans(), rfc3339=st.booleans(), with_id=st.booleans())
def test_rows_carry_the_event_the_stamps_and_the_user_agent_fields(user_agent: str, upper: bool, rfc3339: bool,
                                                                   with_id: bool) -> None:
    e = event()
    if upper:
        e["event_id"] = str(e["event_id"]).upper()
    if rfc3339:
        e["ts"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not with_id:
        del e["event_id"]
    sent = dict(e)
    (event_id,), (row,) = rows([e], user_agent)
    decoded = orjson.loads(row)
    assert b"\n" not in row
    assert event_id == decoded["event_id"].lower().encode() and len(event_id) == EVENT_ID_BYTES
    assert decoded["user_agent"] == user_agent and decoded["ip_hash"] == "abc"
    # the User-Agent fields are those of an independent parse of the User-Agent
    expected = agent(user_agent)._asdict()
    assert {k: decoded[k] for k in expected} == expected
    assert {k: decoded[k] for k in sent if k != "ts"} == {k: v for k, v in sent.items() if k != "ts"}


def test_a_block_gives_each_row_its_position_and_reads_back_row_by_row() -> None:
    ids, rws = rows([event(anonymous_id=f"a{i}") for i in range(3)], "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0")
    first = frame(b'{"legacy": 1}')  # a record of the previous format before the block
    data = first + frame(block_payload("seg-1", len(first), ids, rws))
    spans, end = frames(data)
    assert end == len(data) and len(spans) == 2
    block = block_at(data, *spans[1])
    assert block is not None and block.rows == 3 and block_at(data, *spans[0]) is None
    assert data[block.ids_start : block.rows_start] == b"".join(ids)
    records = records_of("seg-1", data, spans)
    assert [r.offset for r in records] == [0, len(first), len(first) + 1, len(first) + 2]
    assert [r.end for r in records] == [len(first), len(first) + 1, len(first) + 2, len(data)]
    decoded = [orjson.loads(r.payload) for r in records[1:]]
    assert [(d["spool_segment"], d["spool_offset"]) for d in decoded] == [("seg-1", r.offset) for r in records[1:]]
    unpositioned = [{k: v for k, v in d.items() if not k.startswith("spool_")} for d in decoded]
    assert unpositioned == [orjson.loads(r) for r in rws]
    # the rows the flusher sends as one byte range are the same rows, newline-terminated
    assert data[block.rows_start : block.end] == b"".join(r.payload + b"\n" for r in records[1:])
    assert block.end == spans[1][1] and block.offset == spans[1][0] and spans[1][0] + HEADER.size < block.ids_start


@pytest.mark.parametrize(("ids", "rws"), [
    ([], []),
    ([b"x" * 36], [b'{"a":1}', b'{"a":2}']),
    ([b"short"], [b'{"a":1}']),
    ([b"x" * 36], [b'{"a":\n1}']),
    ([b"x" * 36], [b'{"a":1} ']),
], ids=["empty", "count-mismatch", "short-id", "newline", "not-an-object"])
def test_malformed_blocks_are_refused(ids: list[bytes], rws: list[bytes]) -> None:
    with pytest.raises(ValueError):
        block_payload("seg", 0, ids, rws)


def test_previous_format_keys_fast_path_and_fallback() -> None:
    fast = orjson.dumps({"event_id": "8C7D7A8E-1B0E-4B59-9A52-3C1F8B3C5F11", "user_agent": "x", "type": "page_view"})
    other = orjson.dumps({"type": "page_view", "event_id": "8C7D7A8E-1B0E-4B59-9A52-3C1F8B3C5F11", "user_agent": "x"})
    assert legacy.record_keys(fast) == legacy.record_keys(other) == (b"8c7d7a8e-1b0e-4b59-9a52-3c1f8b3c5f11", b"x")


@given(user_agent=st.text(max_size=80))
def test_previous_format_line_is_the_record_with_position_and_agent_fields(user_agent: str) -> None:
    record = orjson.dumps({"event_id": str(uuid.uuid4()), "user_agent": user_agent, **event()})
    _, ua_json = legacy.record_keys(record)
    line = orjson.loads(legacy.ingest_line(record, position_tail("seg-1"), 42, legacy.agent_fields(ua_json)))
    assert (line["spool_segment"], line["spool_offset"], line["user_agent"]) == ("seg-1", 42, user_agent)
    expected = agent(user_agent)._asdict()
    assert {k: line[k] for k in expected} == expected
    assert {k: v for k, v in line.items() if k not in expected and not k.startswith("spool_")} == orjson.loads(record)
