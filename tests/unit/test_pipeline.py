"""The request pipeline's pure steps (collector.pipeline): parse, timestamps, clock policy, stamping.

Expected values are computed independently (calendar.timegm, uuid, hashlib), not by the code under test.
"""

from __future__ import annotations

import calendar
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickstream.core.errors import ClickstreamError
from clickstream.core.schema import TOO_DEEP_MESSAGE
from clickstream.core.settings import Settings
from clickstream.core.times import parse_ts
from clickstream.core.useragent import Agent
from collector.pipeline import check_clock, parse_body, process
from collector.schemas import EventSchemas
from collector.validation import RejectReason
from tests.conftest import make_event

VALIDATOR = EventSchemas()
DEFAULTS = Settings()
MAX_AGE_MS = DEFAULTS.max_event_age_s * 1000
MAX_SKEW_MS = DEFAULTS.max_clock_skew_s * 1000
NOW_MS = 1_700_000_000_000


def run(events: list[Any], *, received_at_ms: int = NOW_MS, user_agent: str = "Mozilla/5.0 test",
        ip_hash: str = "0123456789abcdef", pending: Callable[[dict[str, Any]], None] | None = None) -> Any:
    return process(events, VALIDATOR, received_at_ms=received_at_ms, user_agent=user_agent, ip_hash=ip_hash,
                   max_age_ms=MAX_AGE_MS, max_skew_ms=MAX_SKEW_MS, pending=pending)


def event(**overrides: Any) -> dict[str, Any]:
    return make_event(**{"ts": NOW_MS, **overrides})


# -- parse_body -------------------------------------------------------------------------------
def test_parse_body_object_is_a_batch_of_one() -> None:
    assert parse_body(b'{"a": 1}', 100) == [{"a": 1}]


def test_parse_body_array_keeps_order_and_non_objects() -> None:
    assert parse_body(b'[{"a": 1}, 2, "x", null]', 100) == [{"a": 1}, 2, "x", None]


def test_parse_body_scalar_becomes_one_candidate() -> None:
    assert parse_body(b"42", 100) == [42]


def test_parse_body_empty_array_is_400() -> None:
    with pytest.raises(ClickstreamError) as info:
        parse_body(b"[]", 100)
    assert (info.value.status, info.value.code) == (400, RejectReason.EMPTY_BATCH)


def test_parse_body_batch_limit_is_inclusive() -> None:
    assert len(parse_body(orjson.dumps([{}] * 5), 5)) == 5
    with pytest.raises(ClickstreamError) as info:
        parse_body(orjson.dumps([{}] * 6), 5)
    assert (info.value.status, info.value.code) == (413, RejectReason.BATCH_TOO_LARGE)
    assert "6" in info.value.message and "5" in info.value.message


@pytest.mark.parametrize("body", [b"", b"{", b'{"a": 1,}', b"\xff\xfe", b'"\\ud800"', b"NaN", b"1e400",
                                  b"[" * 1100 + b"]" * 1100, b'{"a": 1} {"b": 2}'],
                         ids=["empty", "unclosed", "trailing-comma", "not-utf8", "lone-surrogate", "nan",
                              "infinity", "too-deep", "two-values"])
def test_parse_body_malformed_is_400_with_message(body: bytes) -> None:
    with pytest.raises(ClickstreamError) as info:
        parse_body(body, 100)
    assert (info.value.status, info.value.code) == (400, RejectReason.MALFORMED_JSON)
    assert info.value.message.startswith("malformed JSON: ")
    assert len(info.value.message) > len("malformed JSON: ")


# -- parse_ts ---------------------------------------------------------------------------------
def test_parse_ts_epoch_ms() -> None:
    assert parse_ts(0) == 0
    assert parse_ts(NOW_MS) == NOW_MS
    assert parse_ts(1_700_000_000_000.0) == NOW_MS  # JSON Schema counts 1.7e12 as an integer


@pytest.mark.parametrize(("text", "expected"), [
    ("2023-11-14T22:13:20Z", calendar.timegm((2023, 11, 14, 22, 13, 20)) * 1000),
    ("2023-11-14t22:13:20z", calendar.timegm((2023, 11, 14, 22, 13, 20)) * 1000),
    ("2023-11-14 22:13:20+00:00", calendar.timegm((2023, 11, 14, 22, 13, 20)) * 1000),
    ("2023-11-14T22:13:20.5Z", calendar.timegm((2023, 11, 14, 22, 13, 20)) * 1000 + 500),
    ("2023-11-15T03:43:20.123+05:30", calendar.timegm((2023, 11, 14, 22, 13, 20)) * 1000 + 123),
    ("2023-11-14T14:13:20.999999999-08:00", calendar.timegm((2023, 11, 14, 22, 13, 20)) * 1000 + 999),
    ("2024-02-29T23:59:59.0019+00:00", calendar.timegm((2024, 2, 29, 23, 59, 59)) * 1000 + 1),
    ("1969-12-31T23:59:59.999Z", -1),
    ("9999-12-31T23:59:59.999Z", 253402300799999),
], ids=lambda v: str(v))
def test_parse_ts_rfc3339(text: str, expected: int) -> None:
    assert parse_ts(text) == expected


@pytest.mark.parametrize("text", [
    "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z", "2024-04-31T00:00:00Z",
    "2024-01-01T25:00:00Z", "2024-01-01T00:60:00Z", "2024-01-01T00:00:60Z", "2024-01-01T00:00:00+24:00",
    "0000-01-01T00:00:00Z", "2024-01-01T00:00:00",
])
def test_parse_ts_impossible_instants_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ts(text)


@pytest.mark.parametrize("value", [1.5, True])
def test_parse_ts_non_integral_numbers_raise_value_error(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_ts(value)


@settings(max_examples=200, deadline=None)
@given(
    moment=st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9998, 12, 30)),
    offset_min=st.integers(-23 * 60 - 59, 23 * 60 + 59),
    extra_digits=st.text("0123456789", max_size=3),
    sep=st.sampled_from("Tt "),
)
def test_parse_ts_matches_an_independent_computation(moment: dt.datetime, offset_min: int, extra_digits: str,
                                                     sep: str) -> None:
    utc_ms = calendar.timegm(moment.timetuple()) * 1000 + moment.microsecond // 1000
    local = moment + dt.timedelta(minutes=offset_min)
    sign = "+" if offset_min >= 0 else "-"
    hh, mm = divmod(abs(offset_min), 60)
    text = (f"{local:%Y-%m-%d}{sep}{local:%H:%M:%S}.{local.microsecond:06d}{extra_digits}"
            f"{sign}{hh:02d}:{mm:02d}")
    assert parse_ts(text) == utc_ms


# -- clock policy -----------------------------------------------------------------------------
def test_clock_bounds() -> None:
    assert MAX_AGE_MS == 72 * 3600 * 1000 and MAX_SKEW_MS == 5 * 60 * 1000
    assert check_clock(NOW_MS - MAX_AGE_MS, NOW_MS, MAX_AGE_MS, MAX_SKEW_MS) is None  # inclusive
    assert check_clock(NOW_MS - MAX_AGE_MS - 1, NOW_MS, MAX_AGE_MS, MAX_SKEW_MS) is RejectReason.TS_TOO_OLD
    assert check_clock(NOW_MS + MAX_SKEW_MS, NOW_MS, MAX_AGE_MS, MAX_SKEW_MS) is None  # inclusive
    assert check_clock(NOW_MS + MAX_SKEW_MS + 1, NOW_MS, MAX_AGE_MS, MAX_SKEW_MS) is RejectReason.TS_IN_FUTURE
    assert check_clock(NOW_MS, NOW_MS, MAX_AGE_MS, MAX_SKEW_MS) is None


@pytest.mark.parametrize(("ts", "reason"), [
    (NOW_MS - MAX_AGE_MS - 1, RejectReason.TS_TOO_OLD),
    (NOW_MS - 100 * 3600 * 1000, RejectReason.TS_TOO_OLD),
    (NOW_MS + MAX_SKEW_MS + 1, RejectReason.TS_IN_FUTURE),
    ("2023-11-14T22:18:20.001Z", RejectReason.TS_IN_FUTURE),  # NOW + 5 min + 1 ms as RFC 3339
    (NOW_MS - MAX_AGE_MS, None),
    (NOW_MS + MAX_SKEW_MS, None),
    ("2023-11-14T22:18:20Z", None),
])
def test_clock_policy_in_process(ts: Any, reason: RejectReason | None) -> None:
    outcome = run([event(ts=ts)])
    if reason is None:
        assert len(outcome.records) == 1 and outcome.errors == []
    else:
        assert outcome.records == []
        [error] = outcome.errors
        assert (error.index, error.path, error.reason) == (0, "/ts", reason)
        assert outcome.rejected_entries[0]["reason"] == reason.value


def test_pattern_valid_but_impossible_ts_is_its_own_reason() -> None:
    outcome = run([event(ts="2023-02-30T00:00:00Z")])
    [error] = outcome.errors
    assert (error.path, error.reason) == ("/ts", RejectReason.INVALID_TIMESTAMP)
    assert "not a valid timestamp" in error.message


# -- stamping ---------------------------------------------------------------------------------
def test_stamping() -> None:
    sent = event(ts="2023-11-14T22:13:19.250Z")
    del sent["event_id"]
    original = dict(sent)
    outcome = run([sent], user_agent="UA/1.0", ip_hash="feedfacecafebeef")
    [record] = outcome.rows()
    stored = orjson.loads(record)
    assert stored["received_at"] == NOW_MS
    assert stored["ts"] == NOW_MS - 750
    assert uuid.UUID(stored["event_id"]).version == 4
    assert stored["user_agent"] == "UA/1.0"
    assert stored["ip_hash"] == "feedfacecafebeef"
    assert stored["browser"] == "Other" and stored["is_bot"] == 0  # the User-Agent's fields, stamped once
    stamps = ("received_at", "event_id", "user_agent", "ip_hash", "ts", *Agent._fields)
    assert {k: v for k, v in stored.items() if k not in stamps} == {k: v for k, v in original.items() if k != "ts"}
    assert outcome.ids == [stored["event_id"].encode()]


def test_client_event_id_is_kept_and_each_missing_one_is_new() -> None:
    mine = str(uuid.uuid4())
    a, b = event(), event()
    del a["event_id"], b["event_id"]
    outcome = run([event(event_id=mine), a, b])
    ids = [orjson.loads(r)["event_id"] for r in outcome.records]
    assert ids[0] == mine
    assert len(set(ids)) == 3


def test_no_ip_hash_field_when_there_is_no_client_address() -> None:
    [record] = run([event()], ip_hash="").rows()
    assert "ip_hash" not in orjson.loads(record) and "received_at" in orjson.loads(record)


def test_mixed_batch_keeps_indices_and_raw_events() -> None:
    bad = event(site_id="")
    outcome = run([event(), bad, "nope", event(ts=NOW_MS - MAX_AGE_MS - 1), event()])
    assert len(outcome.records) == 2
    assert [(e.index, e.path, e.reason) for e in outcome.errors] == [
        (1, "/site_id", RejectReason.SCHEMA_VIOLATION),
        (2, "", RejectReason.SCHEMA_VIOLATION),
        (3, "/ts", RejectReason.TS_TOO_OLD),
    ]
    assert all(e.message for e in outcome.errors)
    assert [r["event"] for r in outcome.rejected_entries][:2] == [bad, "nope"]
    assert outcome.errors[0].as_json() == {"index": 1, "path": "/site_id", "message": outcome.errors[0].message,
                                           "reason": "schema_violation"}


def test_too_deep_event_is_a_schema_violation_not_an_exception() -> None:
    deep: Any = "x"
    for _ in range(1000):
        deep = [deep]
    outcome = run([event(props={"k": deep})])
    [error] = outcome.errors
    assert (error.path, error.message, error.reason) == ("", TOO_DEEP_MESSAGE, RejectReason.SCHEMA_VIOLATION)


def test_integer_and_rfc3339_ts_of_the_same_instant_give_the_same_record() -> None:
    # the integer case takes process()'s fast path, the string case the general one
    as_int = event(ts=NOW_MS - 250)
    as_text = {**as_int, "ts": "2023-11-14T22:13:19.750Z"}
    batch = run([dict(as_int), dict(as_text)]).records  # copies: process stamps in place
    a, b = run([as_int]).records, run([as_text]).records
    assert a == b and len(a) == 1
    assert batch == a * 2


# -- consent pending --------------------------------------------------------------------------
def pending_event(**overrides: Any) -> dict[str, Any]:
    sent = event(consent="pending", **overrides)
    del sent["anonymous_id"], sent["session_id"]
    return sent


def test_pending_event_gets_its_ids_from_the_hook_and_loses_consent() -> None:
    seen: list[dict[str, Any]] = []

    def hook(e: dict[str, Any]) -> None:
        seen.append(dict(e))
        e["anonymous_id"], e["session_id"] = "cookieless-abc", "s-9"

    consented = event()
    outcome = run([pending_event(), consented], pending=hook)
    assert outcome.errors == []
    first, second = (orjson.loads(r) for r in outcome.records)
    assert (first["anonymous_id"], first["session_id"]) == ("cookieless-abc", "s-9")
    assert "consent" not in first
    [given] = seen  # the hook sees the event after the clock check, without consent or ids
    assert given["ts"] == NOW_MS and not {"consent", "anonymous_id", "session_id"} & set(given)
    assert (second["anonymous_id"], second["session_id"]) == (consented["anonymous_id"], consented["session_id"])


def test_pending_event_without_a_hook_is_rejected_with_its_reason() -> None:
    sent = pending_event(ts="2023-11-14T22:13:20Z")
    outcome = run([sent])
    assert outcome.records == []
    [error] = outcome.errors
    assert (error.path, error.reason) == ("/consent", RejectReason.CONSENT_PENDING)
    assert outcome.rejected_entries[0]["event"] == sent and sent["ts"] == "2023-11-14T22:13:20Z"  # as sent


def test_pending_event_with_a_client_id_is_a_schema_violation() -> None:
    calls: list[Any] = []
    outcome = run([{**pending_event(), "anonymous_id": "chosen"}], pending=calls.append)
    assert [(e.path, e.reason) for e in outcome.errors] == [("/anonymous_id", RejectReason.SCHEMA_VIOLATION)]
    assert calls == []


# -- integer fields written as JSON floats ----------------------------------------------------
def test_integer_fields_with_a_zero_fraction_are_accepted_and_written_as_integers() -> None:
    """JSON Schema's integer admits 3.0; the spooled record must carry 3 (ClickHouse's UInt32 refuses 3.0)."""
    sent = [event(seq=3.0, screen={"w": 1280.0, "h": 720}), event(seq=7, screen={"w": 1, "h": 2.0}), event(seq=1e2)]
    outcome = run(orjson.loads(orjson.dumps(sent)))
    assert outcome.errors == []
    records = [orjson.loads(r) for r in outcome.records]
    assert [(r["seq"], r["screen"]) for r in records[:2]] == [(3, {"w": 1280, "h": 720}), (7, {"w": 1, "h": 2})]
    assert records[2]["seq"] == 100
    assert all(type(r["seq"]) is int and all(type(v) is int for v in r.get("screen", {}).values()) for r in records)
    assert b"3.0" not in outcome.records[0] and b"1280.0" not in outcome.records[0]


def test_integer_fields_with_a_fraction_are_rejected() -> None:
    outcome = run([event(seq=3.5)])
    assert outcome.records == []
    assert [e.reason for e in outcome.errors] == [RejectReason.SCHEMA_VIOLATION] and "seq" in outcome.errors[0].message
