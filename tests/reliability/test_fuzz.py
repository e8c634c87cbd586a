"""Suite 5, hostile input, the pure parts: Hypothesis fuzzes the spool frame reader, the event and
stitch validators and the query port's parameter parsing. Pass condition: 0 crashes, i.e. every
input ends in a result or in the error the function documents (never another exception), and
what is read back is what was written.

Examples per test: CI size by default, RELIABILITY_FULL=1 for the full size.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from clickstream.core.errors import ClickstreamError, InvalidRequest
from clickstream.core.settings import Settings
from clickstream.core.spool import (
    HEADER,
    CorruptSegmentError,
    SegmentInfo,
    SpoolReader,
    block_at,
    block_payload,
    frame,
    frames,
    records_of,
    scan_blocks,
)
from collector.pipeline import parse_body, process
from collector.validation import EventValidator
from reports.query_port.config import QueryPortConfig
from reports.query_port.errors import QueryPortError
from reports.query_port.guard import escape_param, parse_set, parse_use, quote_identifier
from reports.query_port.policy import SettingsPolicy
from reports.query_port.request import authenticate, form_fields, query_text, response_compression, split_params
from reports.query_port.sessions import Sessions
from stitcher.request import parse_request
from tests.conftest import make_event, now_ms
from tests.reliability.leads_support import size

EXAMPLES = size(300, 2000)
pytestmark = pytest.mark.timeout(1800)  # the full size takes minutes per test on 2 shared cores
FUZZ = settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                deadline=None)

#: JSON values as orjson decodes them (integers within 64 bits, no NaN).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
#: Values near the event schema: a valid page view with fields replaced, removed or added.
EVENT_FIELDS = ["type", "site_id", "anonymous_id", "session_id", "ts", "url", "event_id", "referrer", "title", "utm",
                "variants", "props", "screen", "lang", "seq", "schema", "consent"]
mutated_events = st.builds(
    lambda base, drop, extra: {**{k: v for k, v in base.items() if k not in drop}, **extra},
    st.builds(lambda: make_event()),
    st.sets(st.sampled_from(EVENT_FIELDS)),
    st.dictionaries(st.sampled_from(EVENT_FIELDS) | st.text(max_size=8), json_values, max_size=4),
)


# -- the spool frame reader -------------------------------------------------------------------------
def _block(n: int, offset: int) -> bytes:
    ids = [b"%036d" % i for i in range(n)]
    rows = [orjson.dumps({"type": "page_view", "n": i}) for i in range(n)]
    return frame(block_payload("00000000000000001-abcdef01", offset, ids, rows))


def _check_frames(buf: bytes) -> None:
    spans, end = frames(buf)
    pos = 0
    for start, stop in spans:  # contiguous from 0, each CRC-valid
        assert start == pos
        length, crc = HEADER.unpack_from(buf, start)
        assert stop == start + HEADER.size + length and zlib.crc32(buf[start + HEADER.size : stop]) == crc
        pos = stop
    assert end == pos
    blocks, blocks_end = scan_blocks(buf)  # the flusher's reader agrees with the plain one
    assert [(b[0], b[1]) for b in blocks] == spans and blocks_end == end
    for offset, stop, rows, _, _ in blocks:
        block = block_at(buf, offset, stop)
        assert (block.rows if block else 0) == rows
    records = records_of("seg", buf, spans)
    assert len(records) >= len(spans)


@FUZZ
@given(st.binary(max_size=2000))
def test_frame_reader_on_random_bytes(buf: bytes) -> None:
    _check_frames(buf)


@FUZZ
@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.data())
def test_frame_reader_on_torn_and_corrupted_segments(blocks: list[int], data: st.DataObject) -> None:
    segment = b""
    ends = []
    for n in blocks:
        segment += _block(n, len(segment))
        ends.append(len(segment))
    cut = data.draw(st.integers(0, len(segment)), "cut")
    torn = segment[:cut]
    _spans, end = frames(torn)
    assert end == max([e for e in ends if e <= cut], default=0)  # the torn tail is cut, nothing else
    _check_frames(torn)
    flips = data.draw(st.lists(st.integers(0, len(segment) - 1), max_size=4), "flips")
    corrupt = bytearray(segment)
    for i in flips:
        corrupt[i] ^= 0xFF
    _check_frames(bytes(corrupt))
    # a frame whose payload looks like a block head, with any row count, at any place
    bogus = frame(b"CSB1" + struct.pack("<I", data.draw(st.integers(0, 2**32 - 1), "n"))
                  + data.draw(st.binary(max_size=60), "tail"))
    _check_frames(segment + bogus)
    _check_frames(bogus)


@FUZZ
@given(st.binary(max_size=600), st.sampled_from([".seg", ".open"]))
def test_spool_reader_on_a_damaged_file_raises_only_corrupt_segment(tmp_path_factory: Any, buf: bytes,
                                                                   suffix: str) -> None:
    directory = tmp_path_factory.mktemp("fuzz-spool")
    path = directory / f"00000000000000001-abcdef01{suffix}"
    path.write_bytes(_block(2, 0) + buf)
    reader = SpoolReader(directory)
    try:
        reader.records(SegmentInfo(path.stem, path, path.stat().st_size))
    except CorruptSegmentError:
        assert suffix == ".seg"
    assert len(list(reader.iter_all())) >= 2


# -- validators ---------------------------------------------------------------------------------------
VALIDATOR = EventValidator()


@FUZZ
@given(st.lists(json_values | mutated_events, min_size=1, max_size=8))
def test_event_validation_and_stamping_never_crash(events: list[Any]) -> None:
    outcome = process(events, VALIDATOR, received_at_ms=now_ms(), user_agent="fuzz", ip_hash="h",
                      max_age_ms=72 * 3_600_000, max_skew_ms=300_000, pending=lambda e: e.update(
                          anonymous_id="cookieless-x", session_id="s"),
                      sites={"example.com": frozenset({"https://example.com"})}, origin=None)
    assert len(outcome.records) + len(outcome.errors) == len(events)  # each event accepted or rejected
    for record in outcome.records:
        assert orjson.loads(record)["site_id"] == "example.com"


@FUZZ
@given(st.binary(max_size=400) | json_values.map(orjson.dumps)
       | st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
       | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_collect_body_parsing_raises_only_clickstream_errors(body: bytes) -> None:
    try:
        events = parse_body(body, 100)
    except ClickstreamError as exc:
        assert exc.status in (400, 413)
        return
    process(events, VALIDATOR, received_at_ms=now_ms(), user_agent="", ip_hash="", max_age_ms=1,
            max_skew_ms=1)


@FUZZ
@given(st.binary(max_size=300) | json_values.map(orjson.dumps)
       | st.fixed_dictionaries({"lead_id": st.text(max_size=130), "anonymous_id": st.text(max_size=130)},
                               optional={"occurred_at": json_values, "session_id": json_values,
                                         "site_id": json_values, "properties": json_values}).map(orjson.dumps))
def test_stitch_request_parsing_raises_only_invalid_request(body: bytes) -> None:
    try:
        request = parse_request(body, now_ms=now_ms(), max_skew_ms=300_000)
    except InvalidRequest as exc:
        assert exc.status == 400 and exc.extra["errors"]
        return
    assert request.lead_id and request.anonymous_id
    assert len(request.fingerprint()) == 64


# -- the query port's parameter parsing ------------------------------------------------------------------
CONFIG = QueryPortConfig.for_local(Settings(), password="fuzz-password")
POLICY = SettingsPolicy(CONFIG, ["max_threads", "max_execution_time", "readonly", "max_result_rows",
                                 "output_format_json_quote_64bit_integers", "limit", "join_use_nulls"])
names = st.sampled_from(["query", "database", "default_format", "session_id", "param_x", "compress", "user",
                         "password", "max_threads", "readonly", "limit", "http_zlib_compression_level",
                         "enable_http_compression", "client_protocol_version", "x_format"]) | st.text(max_size=20)
#: Numbers as a hostile client may write them: other scripts' digits, superscripts, fractions.
numberish = st.text(st.sampled_from("0123456789²³¹½١٢۳߀.-+e "), min_size=1, max_size=5)
params = st.lists(st.tuples(names, st.text(max_size=40) | numberish), max_size=8)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)


@FUZZ
@given(params, st.dictionaries(st.sampled_from(["authorization", "x-clickhouse-user", "x-clickhouse-key",
                                                "accept-encoding"]), header_values, max_size=4),
       st.booleans(), st.binary(max_size=200))
def test_query_port_parameter_parsing_raises_only_query_port_errors(
        pairs: list[tuple[str, str]], header_map: dict[str, str], multipart: bool, body: bytes) -> None:
    headers = Headers(header_map)
    for step in (
        lambda: authenticate(headers, pairs, CONFIG),
        lambda: split_params(pairs, multipart),
        lambda: query_text(dict(pairs), body, CONFIG),
        lambda: response_compression(headers, pairs, CONFIG),
        lambda: POLICY.check_all(pairs),
        lambda: form_fields("multipart/form-data; boundary=" + (header_map.get("accept-encoding") or "b"), body),
    ):
        with contextlib.suppress(QueryPortError):
            step()


@FUZZ
@given(st.text(max_size=120))
def test_query_port_statement_helpers_never_crash(text: str) -> None:
    for statement in ("SET " + text, "USE " + text):
        with contextlib.suppress(QueryPortError):
            parse_set(statement) if statement.startswith("SET") else parse_use(statement)
    assert "\n" not in escape_param(text) and "\t" not in escape_param(text)
    quoted = quote_identifier(text)
    assert quoted.startswith("`") and quoted.endswith("`")


@FUZZ
@given(numberish, st.sampled_from(["http_zlib_compression_level", "max_threads", "max_execution_time"]))
def test_query_port_numeric_parameters_never_crash(value: str, name: str) -> None:
    """Found by this suite: `str.isdigit()` accepts '²', which `int()` refuses (a 500 before the fix)."""
    level = response_compression(Headers({"accept-encoding": "gzip"}), [(name, value)], CONFIG)[1]
    assert 1 <= level <= 9
    sessions = Sessions(CONFIG)
    for check in (lambda: POLICY.check(name, value), lambda: sessions.acquire("s", value, False)):
        with contextlib.suppress(QueryPortError):
            check()
