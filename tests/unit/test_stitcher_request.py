"""POST /stitch body parsing, idempotency fingerprint, timestamps, and the lead_created bytes."""

from __future__ import annotations

import datetime as dt
import uuid

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clickstream.core.errors import InvalidRequest
from clickstream.core.times import parse_ts, rfc3339
from stitcher.attribution import Attribution, Touch
from stitcher.event import LEAD_NAMESPACE, build_event, event_id_for, lead_events_row
from stitcher.request import StitchRequest, differing_fields, parse_request
from tests.conftest import SCHEMAS_DIR

NOW = 1_780_000_000_000
LEAD_SCHEMA = orjson.loads((SCHEMAS_DIR / "lead_created.schema.json").read_bytes())


def parse(body: object) -> StitchRequest:
    return parse_request(orjson.dumps(body), now_ms=NOW, max_skew_ms=300_000)


def errors_of(body: bytes) -> list[dict[str, object]]:
    with pytest.raises(InvalidRequest) as info:
        parse_request(body, now_ms=NOW, max_skew_ms=300_000)
    assert info.value.status == 400
    errors: list[dict[str, object]] = info.value.extra["errors"]
    assert all(set(e) == {"index", "path", "message"} for e in errors)
    return errors


@pytest.mark.parametrize(("body", "path"), [
    (b"{", ""),
    (b"[]", ""),
    (orjson.dumps({"anonymous_id": "a"}), ""),
    (orjson.dumps({"lead_id": "", "anonymous_id": "a"}), "/lead_id"),
    (orjson.dumps({"lead_id": "l\n1", "anonymous_id": "a"}), "/lead_id"),
    (orjson.dumps({"lead_id": "l", "anonymous_id": "a b"}), "/anonymous_id"),
    (orjson.dumps({"lead_id": "l", "anonymous_id": "a", "occurred_at": "yesterday"}), "/occurred_at"),
    (orjson.dumps({"lead_id": "l", "anonymous_id": "a", "occurred_at": "2024-13-01T00:00:00Z"}), "/occurred_at"),
    (orjson.dumps({"lead_id": "l", "anonymous_id": "a", "occurred_at": NOW + 3_600_000}), "/occurred_at"),
    (orjson.dumps({"lead_id": "l", "anonymous_id": "a", "occurred_at": 1000}), "/occurred_at"),
    (orjson.dumps({"lead_id": "l", "anonymous_id": "a", "properties": {"k": [1]}}), "/properties/k"),
    (orjson.dumps({"lead_id": "l", "anonymous_id": "a", "properties": {f"k{i}": i for i in range(65)}}),
     "/properties"),
    (orjson.dumps({"lead_id": "l", "anonymous_id": "a", "extra": 1}), ""),
])
def test_bad_bodies_are_400_with_a_json_pointer(body: bytes, path: str) -> None:
    assert path in [e["path"] for e in errors_of(body)]


def test_same_instant_in_either_form_is_the_same_request() -> None:
    a = parse({"lead_id": "L", "anonymous_id": "a", "occurred_at": 1_717_243_200_000})
    b = parse({"lead_id": "L", "anonymous_id": "a", "occurred_at": "2024-06-01T14:00:00+02:00", "properties": {}})
    assert a == b
    assert a.fingerprint() == b.fingerprint()


def test_differing_fields_names_what_changed() -> None:
    a = parse({"lead_id": "L", "anonymous_id": "a", "properties": {"plan": "pro"}})
    b = parse({"lead_id": "L", "anonymous_id": "b", "session_id": "s", "properties": {"plan": "free"}})
    assert differing_fields(a.canonical(), b) == ["anonymous_id", "properties", "session_id"]


@given(st.integers(min_value=946_684_800_000, max_value=7_258_118_399_999))
def test_timestamp_round_trip(ms: int) -> None:
    text = rfc3339(ms)
    assert parse_ts(text) == ms
    assert dt.datetime.fromisoformat(text).timestamp() * 1000 == pytest.approx(ms, abs=1)


def test_event_id_is_uuid5_of_the_lead_id_in_a_fixed_namespace() -> None:
    assert uuid.uuid5(uuid.NAMESPACE_URL, "https://clickstream.dev/lead_created") == LEAD_NAMESPACE
    assert event_id_for("lead-42") == str(uuid.uuid5(LEAD_NAMESPACE, "lead-42"))
    assert event_id_for("lead-42") != event_id_for("lead-43")


def test_built_event_validates_and_maps_to_a_lead_events_row() -> None:
    request = parse({"lead_id": "L-1", "anonymous_id": "a", "properties": {"plan": "pro", "seats": 3}})
    touch = Touch("google", "cpc", "brand", "", "", "google.com", "paid_search", "/pricing", 1_779_999_000_123)
    attribution = Attribution("example.com", "s1", "/pricing", touch, touch, {"hero": "B"})
    payload = build_event(request, attribution, occurred_at_ms=NOW, emitted_at_ms=NOW + 5)
    event = orjson.loads(payload)
    jsonschema.Draft202012Validator(LEAD_SCHEMA).validate(event)
    assert event["occurred_at"] == "2026-05-28T20:26:40.000Z"
    row = orjson.loads(lead_events_row(payload))
    assert row["payload"].encode() == payload
    assert row["occurred_at"] == "2026-05-28 20:26:40.000"
    assert row["first_touch"]["ts"] == "2026-05-28 20:10:00.123"
    assert orjson.loads(row["properties"]) == {"plan": "pro", "seats": 3}
    no_touch = Attribution("example.com", "", "", Touch(), Touch(), {})
    empty = orjson.loads(build_event(request, no_touch, occurred_at_ms=NOW, emitted_at_ms=NOW))
    jsonschema.Draft202012Validator(LEAD_SCHEMA).validate(empty)
    assert empty["first_touch"]["ts"] is None and empty["first_touch"]["channel"] == "direct"
