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
    assert enrich.record_keys(record) == (decoded["event_id"].lower(), user_agent)
    assert record.startswith(b'{"event_id":"')


def test_other_layouts_are_still_read() -> None:
    legacy = orjson.dumps({"type": "page_view", "event_id": "8C7D7A8E-1B0E-4B59-9A52-3C1F8B3C5F11", "user_agent": "x"})
    assert enrich.record_keys(legacy) == ("8c7d7a8e-1b0e-4b59-9a52-3c1f8b3c5f11", "x")


@given(user_agent=st.text(max_size=80))
def test_raw_keys_and_agent_fields_match_the_decoded_ones(user_agent: str) -> None:
    (record,) = records([event()], user_agent)
    event_id, ua_json = enrich.record_keys_raw(record)
    decoded_id, decoded_ua = enrich.record_keys(record)
    assert event_id == decoded_id.encode()
    assert enrich.agent_fields_raw(ua_json) == enrich.agent_fields(decoded_ua)
    # the flusher's inlined line equals the reference ingest_line
    inlined = b"".join((record[:-1], enrich.position_prefix("seg-1"), b"%d" % 42, enrich.agent_fields_raw(ua_json),
                        b"}"))
    assert inlined == enrich.ingest_line(record, decoded_ua, "seg-1", 42)
    line = orjson.loads(inlined)
    assert (line["spool_segment"], line["spool_offset"], line["user_agent"]) == ("seg-1", 42, user_agent)
