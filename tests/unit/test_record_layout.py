"""The spool record layout the collector writes and the flusher's fast path that relies on it."""

from __future__ import annotations

import time
import uuid

import orjson
from hypothesis import given
from hypothesis import strategies as st

from collector.pipeline import RECORD_LAYOUT, process
from collector.validation import EventValidator
from flusher import enrich

VALIDATOR = EventValidator()


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"type": "page_view", "site_id": "example.com", "anonymous_id": "a",
                               "session_id": "s", "ts": int(time.time() * 1000), "url": "https://example.com/",
                               "event_id": str(uuid.uuid4())}
    base.update(overrides)
    return base


def records(events: list[dict[str, object]], user_agent: str) -> list[bytes]:
    now = int(time.time() * 1000)
    out = process(events, VALIDATOR, received_at_ms=now, user_agent=user_agent, ip_hash="abc",
                  max_age_ms=3_600_000, max_skew_ms=300_000)
    assert not out.errors
    return out.records


@given(user_agent=st.text(max_size=80), upper=st.booleans(), rfc3339=st.booleans(), with_id=st.booleans())
def test_records_lead_with_event_id_and_user_agent(user_agent: str, upper: bool, rfc3339: bool,
                                                   with_id: bool) -> None:
    e = event()
    if upper:
        e["event_id"] = str(e["event_id"]).upper()
    if rfc3339:
        e["ts"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not with_id:
        del e["event_id"]
    (record,) = records([e], user_agent)
    decoded = orjson.loads(record)
    assert tuple(decoded)[:2] == RECORD_LAYOUT
    assert decoded["user_agent"] == user_agent
    # the fast path and a full parse agree, whatever the User-Agent holds (quotes, backslashes, unicode)
    event_id, ua_json = enrich.record_keys(record)
    assert event_id == decoded["event_id"].lower().encode()
    assert orjson.loads(b'"' + ua_json + b'"') == user_agent
    assert record.startswith(b'{"event_id":"')


def test_other_layouts_are_still_read() -> None:
    legacy = orjson.dumps({"type": "page_view", "event_id": "8C7D7A8E-1B0E-4B59-9A52-3C1F8B3C5F11", "user_agent": "x"})
    assert enrich.record_keys(legacy) == (b"8c7d7a8e-1b0e-4b59-9a52-3c1f8b3c5f11", b"x")


@given(user_agent=st.text(max_size=80))
def test_ingest_line_is_the_record_with_position_and_agent_fields(user_agent: str) -> None:
    (record,) = records([event()], user_agent)
    _, ua_json = enrich.record_keys(record)
    fields = enrich.agent_fields(ua_json)
    line = orjson.loads(enrich.ingest_line(record, enrich.position_prefix("seg-1"), 42, fields))
    assert (line["spool_segment"], line["spool_offset"], line["user_agent"]) == ("seg-1", 42, user_agent)
    # the User-Agent fields are those of an independent parse of the decoded User-Agent
    expected = enrich.agent(user_agent)._asdict()
    assert {k: line[k] for k in expected} == expected
    assert {k: v for k, v in line.items() if k not in expected and not k.startswith("spool_")} == orjson.loads(record)
