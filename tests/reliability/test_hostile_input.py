"""Suite 5, hostile input over HTTP, against a real `clickstream serve` (uvicorn, chDB, spool).

- `/openapi.json` describes POST /collect and POST /stitch with the schema files of schemas/;
  Schemathesis generates valid and invalid requests from it (positive and negative modes):
  0 server errors, and every answer has a documented status, content type and schema.
- Hostile bodies (random bytes, invalid UTF-8, NUL bytes, 100,000 nested brackets, 10,000-event
  arrays, oversized bodies declared or streamed, wrong content types, mutated fields): 0 server
  errors; every request is answered and counted by status, every event accepted or rejected with
  a reason (received = accepted + rejected, from /metrics).
- Slow clients: connections that drip their headers or body are closed after the configured
  timeouts and counted (clickstream_http_timeouts_total); while they are held, normal requests get 202.
- Forged and replayed stitch calls: 0 accepted (no lead created by a forged call, a replay answers
  the original event and writes nothing).

CI size by default, RELIABILITY_FULL=1 for the full size.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clickstream.core.openapi import schema_component
from tests.conftest import Server, make_event, now_ms, sql_rows, start_server, wait_for
from tests.reliability.leads_support import metric, report, size

#: The full size (RELIABILITY_FULL=1) takes minutes on 2 shared cores; CI size well under the default.
pytestmark = pytest.mark.timeout(1800)

TOKEN = "hostile-stitch-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT_S = 5.0  # header and body deadlines of this suite's server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server("serve", tmp_path_factory.mktemp("hostile") / "data", {
        "CLICKSTREAM_STITCH_TOKEN": TOKEN, "CLICKSTREAM_SQL_PASSWORD": "hostile-sql",
        "CLICKSTREAM_STITCH_SESSION_WAIT_S": "0.2",
        "CLICKSTREAM_HTTP_HEADER_TIMEOUT_S": str(TIMEOUT_S), "CLICKSTREAM_HTTP_BODY_TIMEOUT_S": str(TIMEOUT_S),
    })
    yield s
    s.stop()


def scrape(server: Server) -> str:
    return httpx.get(server.url + "/metrics", timeout=30).text


def test_openapi_describes_collect_and_stitch_from_the_schema_files(server: Server) -> None:
    document = httpx.get(server.url + "/openapi.json", timeout=30).json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {"/collect", "/stitch"}
    schemas = document["components"]["schemas"]
    assert schemas["Event"] == schema_component("event.schema.json")
    assert schemas["StitchRequest"] == schema_component("stitch_request.schema.json")
    assert schemas["LeadCreated"] == schema_component("lead_created.schema.json")
    loaded = schemathesis.openapi.from_url(server.url + "/openapi.json")  # a valid OpenAPI document
    assert {op.path for op in loaded.get_all_operations() if hasattr(op, "path")} <= {"/collect", "/stitch"}


def stamp_now(body: Any) -> None:
    """Give every event of a generated /collect body a `ts` of now (epoch ms)."""
    for event in body if isinstance(body, list) else [body]:
        if isinstance(event, dict) and "ts" in event:
            event["ts"] = now_ms()


def not_a_server_error(ctx: Any, response: Any, case: Any) -> None:
    """Schemathesis's check, but a 503 with Retry-After is back-pressure, not a server error: /stitch
    answers it when the spool cannot be flushed within CLICKSTREAM_STITCH_FLUSH_TIMEOUT_S (a busy
    machine), having emitted nothing (docs/architecture.md "HTTP")."""
    headers = {str(k).lower() for k in response.headers}
    if response.status_code >= 500 and not (response.status_code == 503 and "retry-after" in headers):
        raise AssertionError(f"{case.operation.label}: server error {response.status_code}")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
@pytest.mark.parametrize("path", ["/collect", "/stitch"])
def test_schemathesis_finds_no_server_error(server: Server, path: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operation = schema[path]["POST"]
    seen: dict[int, int] = {}

    @settings(max_examples=size(60, 600), deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if path == "/collect" and mode is GenerationMode.POSITIVE:
            stamp_now(case.body)  # schema-valid is not enough: ts must be inside the clock window
        # /stitch may flush the spool first (bounded by CLICKSTREAM_STITCH_FLUSH_TIMEOUT_S, 30 s): a client
        # waits longer than that, or a slow flush on a busy machine reads as a timeout, not an answer
        response = case.call_and_validate(base_url=server.url, headers=AUTH, timeout=60, checks=[
            not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance])
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    run()
    assert not any(status >= 500 and status != 503 for status in seen), seen
    report("schemathesis", path=path, mode=mode.value, requests=sum(seen.values()),
           statuses={str(k): v for k, v in sorted(seen.items())}, server_errors=0)


# -- hostile bodies ------------------------------------------------------------------------------------------
def hostile_bodies(n: int, rng: random.Random) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """(kind, body, headers) of `n` hostile requests, cycling through the kinds."""
    json_type = {"Content-Type": "application/json"}
    beacon_type = {"Content-Type": "text/plain"}
    kinds: list[tuple[str, Callable[[], tuple[bytes, dict[str, str]]]]] = [
        ("random_bytes", lambda: (rng.randbytes(rng.randint(1, 3000)), json_type)),
        ("invalid_utf8", lambda: (b'{"type":"page_view","site_id":"\xff\xfe\xc3(","url":"\xed\xa0\x80"}', beacon_type)),
        ("nul_bytes", lambda: (orjson.dumps(make_event(url="https://example.com/\u0000x", title="a\x00b"))
                               + b"\x00", json_type)),
        ("deep_nesting", lambda: (b"[" * 32_000 + b"]" * 32_000, json_type)),  # under the 64 KiB limit
        ("deep_nesting_100k", lambda: (b"[" * 100_000 + b"]" * 100_000, json_type)),
        ("deep_props", lambda: (orjson.dumps(make_event()).replace(b'"type"', b'"props":' + b'{"a":' * 300 + b"1"
                                                                  + b"}" * 300 + b',"type"'), json_type)),
        ("many_events", lambda: (orjson.dumps([make_event() for _ in range(10_000)]), json_type)),
        ("oversized_declared", lambda: (b"[" + b" " * 70_000 + b"]", json_type)),
        ("wrong_content_type", lambda: (orjson.dumps(make_event()), {"Content-Type": rng.choice([
            "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "image/png", "text/html",
            "application/json-seq", "\u00e9/\u00e8"])})),
        ("mutated_fields", lambda: (orjson.dumps([mutate(make_event(), rng) for _ in range(rng.randint(1, 20))]),
                                    json_type)),
        ("empty", lambda: (b"", json_type)),
        ("json_scalars", lambda: (rng.choice([b"null", b"1", b'"x"', b"true", b"[]", b"{}", b"[[]]", b"1e999"]),
                                  json_type)),
    ]
    for i in range(n):
        kind, make = kinds[i % len(kinds)]
        body, headers = make()
        yield kind, body, headers


def mutate(event: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """An event with one field replaced by a hostile value (or removed)."""
    field = rng.choice([*event, "utm", "props", "variants", "screen", "seq", "schema", "consent"])
    value = rng.choice([None, -1, 2**63, 1.5e308, "", "x" * 5000, "\u0000", "\ud7ff\ue000", [1] * 50, {"a": {"b": 1}},
                        True, "2024-02-30T10:00:00Z", "../../etc/passwd", "<script>", "drop"])
    if value == "drop":
        event.pop(field, None)
    else:
        event[field] = value
    return event


def test_hostile_bodies_get_no_server_error_and_are_all_counted(server: Server) -> None:
    rng = random.Random(5)
    before = scrape(server)
    statuses: dict[str, dict[int, int]] = {}
    sent = accepted = rejected = 0
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for kind, body, headers in hostile_bodies(size(360, 2400), rng):
            answer = http.post("/collect", content=body,
                               headers={k.encode(): v.encode("latin-1") for k, v in headers.items()})
            by_kind = statuses.setdefault(kind, {})
            by_kind[answer.status_code] = by_kind.get(answer.status_code, 0) + 1
            sent += 1
            shape = answer.json()
            accepted += shape["accepted"]
            # per-event rejections are listed; a refused request counts once under its reason
            rejected += shape["rejected"] if shape["accepted"] or shape["rejected"] else 1
        # a body streamed without a length, past the limit: 413 as soon as the limit is crossed
        streamed = http.post("/collect", content=iter([b"[" + b" " * 40_000] * 3),
                             headers={"Content-Type": "text/plain"})
        assert streamed.status_code == 413
        sent += 1
        rejected += 1
    after = scrape(server)
    answered = {s: metric(after, "clickstream_requests_total", status=str(s))
                - metric(before, "clickstream_requests_total", status=str(s)) for s in (202, 400, 413, 415, 503)}
    errors = [(kind, s) for kind, by in statuses.items() for s in by if s >= 500]
    assert not errors, statuses
    assert sum(answered.values()) == sent, (answered, sent)  # every request answered and counted
    assert set(statuses["deep_nesting"]) == {400} and set(statuses["deep_nesting_100k"]) == {413}
    counted_accepted = metric(after, "clickstream_events_accepted_total") - metric(before,
                                                                                  "clickstream_events_accepted_total")
    rejected_total = "clickstream_events_rejected_total"
    counted_rejected = sum(
        metric(after, rejected_total, reason=r) - metric(before, rejected_total, reason=r)
        for r in {line.split('"')[1] for line in after.splitlines()
                  if line.startswith("clickstream_events_rejected_total{")})
    assert (counted_accepted, counted_rejected) == (accepted, rejected)  # received = accepted + rejected by reason
    assert set(statuses["many_events"]) == {413} and set(statuses["wrong_content_type"]) == {415}
    report("hostile_bodies", requests=sent, by_kind={k: {str(s): n for s, n in v.items()} for k, v in statuses.items()},
           answered_by_status={str(k): v for k, v in answered.items()}, events_accepted=accepted,
           rejected_by_reason_total=rejected, server_errors=0)


# -- slow clients ---------------------------------------------------------------------------------------------
def open_slow(server: Server, n: int) -> list[socket.socket]:
    """`n` connections: the first half sends half a header line, the rest complete headers and half a body."""
    host, port = server.url.removeprefix("http://").split(":")
    sockets = []
    for i in range(n):
        s = socket.create_connection((host, int(port)), timeout=30)
        if i % 2 == 0:
            s.sendall(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Ty")
        else:
            s.sendall(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n[{\"type\":")
        sockets.append(s)
    return sockets


def closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.01)
    try:
        return s.recv(1024) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def test_slow_clients_time_out_are_counted_and_do_not_block_normal_requests(server: Server) -> None:
    n = size(300, 1000)
    before = scrape(server)
    started = time.monotonic()
    slow = open_slow(server, n)
    opened_s = time.monotonic() - started
    normal: list[int] = []
    latencies: list[float] = []
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while time.monotonic() - started < TIMEOUT_S * 0.9:  # every slow connection still held
                t0 = time.perf_counter()
                normal.append(http.post("/collect", json=make_event()).status_code)
                latencies.append(time.perf_counter() - t0)
        wait_for(lambda: all(closed_by_server(s) for s in slow), 60, "the server to close every slow connection")
    finally:
        for s in slow:
            s.close()
    after = scrape(server)
    timed_out = {phase: metric(after, "clickstream_http_timeouts_total", phase=phase)
                 - metric(before, "clickstream_http_timeouts_total", phase=phase) for phase in ("headers", "body")}
    assert normal and set(normal) == {202}, normal
    assert timed_out == {"headers": (n + 1) // 2, "body": n // 2}, timed_out
    latencies.sort()
    report("slow_clients", slow_connections=n, opened_in_s=round(opened_s, 2), timeout_s=TIMEOUT_S,
           normal_requests=len(normal),
           normal_202=normal.count(202), timed_out=timed_out,
           normal_p50_ms=round(latencies[len(latencies) // 2] * 1000, 1),
           normal_max_ms=round(latencies[-1] * 1000, 1), fd_limit=os.sysconf("SC_OPEN_MAX"))


# -- forged and replayed stitch calls -------------------------------------------------------------------
#: Authorization headers an attacker may try: random bearer tokens, and near misses of the real one.
FORGED_AUTHORIZATION = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(lambda t: ("Bearer " + t).strip()),
    st.sampled_from([TOKEN, f"bearer {TOKEN}", f"Bearer  {TOKEN}", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}",
                     f"Bearer {TOKEN.upper()}", "Bearer", "", f"Bearer {TOKEN}{TOKEN}", f"Token {TOKEN}"]),
)


def stitch(http: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    """POST /stitch as the app's hook does: a 503 (the freshness flush bound reached on a busy
    machine; nothing emitted) is retried after its Retry-After."""
    for _ in range(10):
        answer = http.post("/stitch", json=body, headers=AUTH)
        if answer.status_code != 503:
            return answer
        time.sleep(float(answer.headers.get("retry-after", "1")))
    return answer


def test_forged_and_replayed_stitch_calls_are_never_accepted(server: Server, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/collect", json=make_event(anonymous_id="replay-v", session_id="replay-s")).status_code == 202
        body = {"lead_id": "L-replay", "anonymous_id": "replay-v", "properties": {"plan": "pro"}}
        original = stitch(http, body)
        assert original.status_code == 201
        before = scrape(server)
        forged_statuses: dict[int, int] = {}

        @settings(max_examples=size(150, 1500), deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(FORGED_AUTHORIZATION, st.text(min_size=1, max_size=20, alphabet="abcdefghijklmnopqrstuvwxyz0123456789-"))
        def forge(authorization: str, lead: str) -> None:
            headers = {"Authorization": authorization} if authorization else {}
            answer = http.post("/stitch", json={"lead_id": "F-" + lead, "anonymous_id": "replay-v"}, headers=headers)
            forged_statuses[answer.status_code] = forged_statuses.get(answer.status_code, 0) + 1

        forge()
        replays = [stitch(http, body) for _ in range(size(20, 200))]
        changed = stitch(http, {**body, "properties": {"plan": "enterprise"}})
        after = scrape(server)
    assert set(forged_statuses) == {401}, forged_statuses
    assert all(r.status_code == 200 and r.content == original.content for r in replays)
    assert changed.status_code == 409
    assert metric(after, "clickstream_stitcher_leads_created_total") == metric(before,
                                                                                "clickstream_stitcher_leads_created_total")
    wait_for(lambda: sql_rows(server, "SELECT count() FROM lead_events WHERE lead_id = 'L-replay'") == [[1]], 60,
             "the lead in lead_events")
    assert sql_rows(server, "SELECT count() FROM lead_events WHERE startsWith(lead_id, 'F-')") == [[0]]
    report("forged_replayed_stitch", forged=sum(forged_statuses.values()), forged_accepted=0, replays=len(replays),
           replays_creating_a_lead=0, conflicting_replay_status=changed.status_code)


def test_openapi_of_each_process_lists_the_routes_it_answers(server_factory: Callable[..., Server],
                                                             tmp_path: Path) -> None:
    expected = {"collector": {"/collect"}, "stitcher": {"/stitch"}, "serve": {"/collect", "/stitch"}}
    for command, paths in expected.items():
        workers = {"workers": "1"} if command == "serve" else {}  # a worker forwards /stitch to its owner
        process = server_factory(command, tmp_path / command, stitch_token=TOKEN, **workers)
        assert set(httpx.get(process.url + "/openapi.json", timeout=30).json()["paths"]) == paths, command
    flusher = server_factory("flusher", tmp_path / "flusher")
    assert httpx.get(flusher.url + "/openapi.json", timeout=30).status_code == 404  # no JSON routes
