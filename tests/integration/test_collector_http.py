"""`POST /collect` and the operations routes on a real `clickstream collector` (uvicorn on a free port).

Outcomes are read where they land: the HTTP status and body, the spool's bytes on disk
(SpoolReader), `<data-dir>/rejected/`, and `/metrics` in Prometheus text format.
"""

from __future__ import annotations

import hashlib
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from clickstream.core.spool import SpoolReader
from collector.rejected import RejectedStore
from tests.conftest import Server, make_event, now_ms, start_server

JSON = {"Content-Type": "application/json"}
Shape = dict[str, Any]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One collector with default settings for the tests that need nothing special."""
    srv = start_server("collector", tmp_path_factory.mktemp("collector") / "data")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()  # no request crashed inside the app


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def spooled(data_dir: Path) -> dict[str, dict[str, Any]]:
    """Every event in the spool (sealed and open segments, bytes on disk) by event_id."""
    return {e["event_id"]: e for e in (orjson.loads(r.payload) for r in
                                       SpoolReader(data_dir / "spool").iter_all())}


def rejected(data_dir: Path) -> list[dict[str, Any]]:
    return list(RejectedStore(data_dir / "rejected").read_all())


def metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def assert_shape(body: Shape, accepted: int, rejected_n: int) -> None:
    assert (body["accepted"], body["rejected"]) == (accepted, rejected_n)
    assert len(body["errors"]) == rejected_n
    for error in body["errors"]:
        assert isinstance(error["index"], int) and isinstance(error["path"], str) and error["message"]


# -- accepted events -------------------------------------------------------------------------
def test_single_event_is_acknowledged_and_in_the_spool(server: Server, client: httpx.Client) -> None:
    event = make_event()
    before = now_ms()
    response = client.post("/collect", content=orjson.dumps(event), headers={**JSON, "User-Agent": "UA-test/1"})
    after = now_ms()
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "rejected": 0, "errors": []}
    stored = spooled(server.data_dir)[event["event_id"]]
    assert {k: stored[k] for k in event} == event
    assert before <= stored["received_at"] <= after
    assert stored["user_agent"] == "UA-test/1"
    assert len(stored["ip_hash"]) == 16 and "127.0.0.1" not in stored["ip_hash"]
    assert b"127.0.0.1" not in b"".join(p.read_bytes() for p in (server.data_dir / "spool").iterdir()
                                        if p.is_file() and not p.name.startswith("."))


def test_batch_is_acknowledged_in_order(server: Server, client: httpx.Client) -> None:
    events = [make_event(anonymous_id=f"a{i}") for i in range(50)]
    response = client.post("/collect", content=orjson.dumps(events), headers=JSON)
    assert response.status_code == 202
    assert_shape(response.json(), 50, 0)
    ids = [orjson.loads(r.payload)["event_id"] for r in SpoolReader(server.data_dir / "spool").iter_all()]
    start = ids.index(events[0]["event_id"])
    assert ids[start : start + 50] == [e["event_id"] for e in events]


def test_event_without_id_gets_one_and_rfc3339_ts_is_stored_as_ms(server: Server, client: httpx.Client) -> None:
    event = make_event(anonymous_id="no-id-" + uuid.uuid4().hex)
    del event["event_id"]
    event["ts"] = "2099-01-01T00:00:00Z"  # in the future: rejected, proves ts is checked after parsing
    assert client.post("/collect", content=orjson.dumps(event), headers=JSON).status_code == 400
    event["ts"] = "1970-01-01T00:00:00Z"
    response = client.post("/collect", content=orjson.dumps(event), headers=JSON)
    assert response.json()["errors"][0]["path"] == "/ts"
    import datetime as dt
    event["ts"] = dt.datetime.now(dt.UTC).isoformat()
    assert client.post("/collect", content=orjson.dumps(event), headers=JSON).status_code == 202
    [stored] = [e for e in spooled(server.data_dir).values() if e["anonymous_id"] == event["anonymous_id"]]
    assert uuid.UUID(stored["event_id"]).version == 4
    assert isinstance(stored["ts"], int) and abs(stored["ts"] - stored["received_at"]) < 60_000


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/json; charset=utf-8", None])
def test_beacon_content_types_are_parsed_as_json(server: Server, client: httpx.Client,
                                                 content_type: str | None) -> None:
    event = make_event()
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/collect", content=orjson.dumps(event), headers=headers)
    assert response.status_code == 202
    assert event["event_id"] in spooled(server.data_dir)


# -- rejected events -------------------------------------------------------------------------
def test_mixed_batch_is_202_with_per_index_errors(server: Server, client: httpx.Client) -> None:
    good = [make_event(), make_event()]
    bad_schema = make_event(site_id="")
    too_old = make_event(ts=now_ms() - 73 * 3600 * 1000)
    response = client.post("/collect", content=orjson.dumps([good[0], bad_schema, good[1], too_old, 7]),
                           headers=JSON)
    assert response.status_code == 202
    body = response.json()
    assert_shape(body, 2, 3)
    assert [(e["index"], e["path"]) for e in body["errors"]] == [(1, "/site_id"), (3, "/ts"), (4, "")]
    on_disk = spooled(server.data_dir)
    assert all(e["event_id"] in on_disk for e in good)
    assert bad_schema["event_id"] not in on_disk and too_old["event_id"] not in on_disk
    kept = {e["event"].get("event_id"): e for e in rejected(server.data_dir) if isinstance(e["event"], dict)}
    assert kept[bad_schema["event_id"]]["reason"] == "schema_violation"
    assert kept[bad_schema["event_id"]]["path"] == "/site_id"
    assert kept[too_old["event_id"]]["reason"] == "ts_too_old"
    assert kept[too_old["event_id"]]["event"] == too_old  # the raw event, as sent
    assert isinstance(kept[too_old["event_id"]]["received_at"], int)


def test_all_invalid_is_400_with_the_same_shape(server: Server, client: httpx.Client) -> None:
    events = [make_event(type="Bad Type"), make_event(ts=now_ms() + 3_600_000)]
    response = client.post("/collect", content=orjson.dumps(events), headers=JSON)
    assert response.status_code == 400
    body = response.json()
    assert_shape(body, 0, 2)
    assert body["errors"][0]["path"] == "/type" and "does not match" in body["errors"][0]["message"]
    assert body["errors"][1]["path"] == "/ts" and "after received_at" in body["errors"][1]["message"]
    reasons = {e["event"].get("event_id"): e["reason"] for e in rejected(server.data_dir)
               if isinstance(e["event"], dict)}
    assert [reasons[e["event_id"]] for e in events] == ["schema_violation", "ts_in_future"]


def test_malformed_json_is_400_with_message_and_the_body_is_kept(server: Server, client: httpx.Client) -> None:
    body = b'{"type": "page_view", "site_id": "malformed-' + uuid.uuid4().hex.encode() + b'",'
    response = client.post("/collect", content=body, headers=JSON)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "malformed_json" and answer["message"].startswith("malformed JSON")
    assert answer["accepted"] == 0
    [kept] = [e for e in rejected(server.data_dir) if e.get("body") == body.decode()]
    assert kept["reason"] == "malformed_json" and kept["message"] == answer["message"]


@pytest.mark.parametrize("depth", [300, 1000])
def test_too_deep_body_is_400_and_kept_raw(server: Server, client: httpx.Client, depth: int) -> None:
    deep = b"[" * depth + b"]" * depth
    marker = uuid.uuid4().hex
    event = orjson.dumps(make_event(props={}, anonymous_id=marker)).replace(
        b'"props":{}', b'"props":{"k":' + deep + b"}")
    response = client.post("/collect", content=event, headers=JSON)
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] in ("", "/props/k")
    [kept] = [e for e in rejected(server.data_dir) if marker in (e.get("body") or "")]
    assert kept["reason"] == "schema_violation" and kept["body"] == event.decode()


def test_body_over_limit_by_content_length_is_413(client: httpx.Client) -> None:
    response = client.post("/collect", content=b" " * (64 * 1024 + 1), headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


def test_chunked_body_over_limit_without_content_length_is_413(client: httpx.Client) -> None:
    sent_headers: dict[str, str] = {}

    def chunks() -> Iterator[bytes]:
        for _ in range(9):
            yield b" " * 8192  # 72 KiB in total, never announced

    def remember(request: httpx.Request) -> None:
        sent_headers.update(request.headers)

    with httpx.Client(base_url=str(client.base_url), event_hooks={"request": [remember]}, timeout=30) as c:
        response = c.post("/collect", content=chunks(), headers=JSON)
    assert "content-length" not in sent_headers and sent_headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413


def test_chunked_body_under_limit_is_accepted(server: Server, client: httpx.Client) -> None:
    event = make_event()
    raw = orjson.dumps(event)
    response = client.post("/collect", content=iter([raw[:10], raw[10:]]), headers=JSON)
    assert response.status_code == 202
    assert event["event_id"] in spooled(server.data_dir)


def test_batch_over_max_batch_events_is_413(server: Server, client: httpx.Client) -> None:
    events = [make_event() for _ in range(101)]
    response = client.post("/collect", content=orjson.dumps(events), headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"] == "batch_too_large"
    assert events[0]["event_id"] not in spooled(server.data_dir)
    assert any(e["reason"] == "batch_too_large" and events[0]["event_id"] in e["body"]
               for e in rejected(server.data_dir))


def test_empty_batch_is_400(client: httpx.Client) -> None:
    response = client.post("/collect", content=b"[]", headers=JSON)
    assert response.status_code == 400 and response.json()["error"] == "empty_batch"


def test_other_media_types_are_415(client: httpx.Client) -> None:
    response = client.post("/collect", content=orjson.dumps(make_event()),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"


# -- operations ------------------------------------------------------------------------------
def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["spool_under_quota"]["ok"] is True
    assert ready.json()["checks"]["spool_writable"]["ok"] is True


def test_metrics_count_requests_by_status_and_rejections_by_reason(client: httpx.Client) -> None:
    before = metrics(client)
    client.post("/collect", content=orjson.dumps([make_event(), make_event(), make_event(url="x")]), headers=JSON)
    client.post("/collect", content=b"{nope", headers=JSON)
    client.post("/collect", content=orjson.dumps(make_event(ts=0)), headers=JSON)
    client.post("/collect", content=b"{}", headers={"Content-Type": "image/png"})
    after = metrics(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("clickstream_requests_total", status="202") == 1
    assert delta("clickstream_requests_total", status="400") == 2
    assert delta("clickstream_requests_total", status="415") == 1
    assert delta("clickstream_events_accepted_total") == 2
    assert delta("clickstream_events_rejected_total", reason="schema_violation") == 1
    assert delta("clickstream_events_rejected_total", reason="malformed_json") == 1
    assert delta("clickstream_events_rejected_total", reason="ts_too_old") == 1
    assert delta("clickstream_events_rejected_total", reason="unsupported_media_type") == 1
    assert after[("clickstream_spool_bytes", ())] > 0
    assert ("clickstream_spool_fsync_seconds_count", ()) in after


def test_cors_preflight_echoes_any_origin_by_default(client: httpx.Client) -> None:
    origin = "https://shop.example"
    response = client.options("/collect", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "content-type"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "POST" in response.headers["access-control-allow-methods"]
    post = client.post("/collect", content=orjson.dumps(make_event()), headers={**JSON, "Origin": origin})
    assert post.status_code == 202 and post.headers["access-control-allow-origin"] == origin


# -- property: no body makes it answer 5xx ---------------------------------------------------
_text = st.text(st.characters(codec="utf-8"), max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=15,
)
_fields = ["type", "site_id", "anonymous_id", "session_id", "ts", "url", "event_id", "props", "variants",
           "utm", "screen", "lang", "title", "referrer"]


@st.composite
def _events(draw: st.DrawFn) -> Any:
    event = make_event()
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from([*_fields, "extra"]))
        if draw(st.booleans()):
            event.pop(field, None)
        else:
            event[field] = draw(st.one_of(_json, st.sampled_from(
                ["2023-02-30T00:00:00Z", "9999-12-31T23:59:59-23:59", 253402300799999, 1.7e12, ""])))
    return event


_bodies = st.one_of(
    st.binary(max_size=300),
    _json.map(orjson.dumps),
    _events().map(orjson.dumps),
    st.lists(_events(), min_size=0, max_size=120).map(orjson.dumps),
    st.integers(1, 1100).map(lambda d: b"[" * d + b"]" * d),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(body=_bodies, content_type=st.sampled_from(["application/json", "text/plain", "text/plain; charset=utf-8",
                                                   "", "application/xml"]))
def test_random_bodies_never_get_a_5xx(client: httpx.Client, body: bytes, content_type: str) -> None:
    response = client.post("/collect", content=body, headers={"Content-Type": content_type} if content_type else {})
    assert response.status_code < 500, response.text
    assert response.status_code in (202, 400, 413, 415)
    answer = response.json()
    if response.status_code == 202 or answer.get("errors"):
        assert_shape(answer, answer["accepted"], answer["rejected"])


# -- servers with their own settings ---------------------------------------------------------
def test_over_quota_is_503_with_retry_after_and_not_ready(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(spool_max_bytes=3000)
    acknowledged: list[str] = []
    with srv.client() as c:
        for _ in range(30):
            event = make_event()
            response = c.post("/collect", content=orjson.dumps(event), headers=JSON)
            if response.status_code == 503:
                break
            assert response.status_code == 202
            acknowledged.append(event["event_id"])
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"] == "spool_full"
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["spool_under_quota"]["ok"] is False
        counters = metrics(c)
        assert counters[("clickstream_events_rejected_total", (("reason", "spool_full"),))] >= 1
        assert counters[("clickstream_requests_total", (("status", "503"),))] >= 1
    assert 5 <= len(acknowledged) < 30
    assert srv.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a graceful shutdown
    assert "Traceback" not in srv.log()
    # a clean stop seals the active segment: every acknowledged event is in a sealed segment
    reader = SpoolReader(srv.data_dir / "spool")
    assert reader.open_segments() == []
    sealed = [orjson.loads(r.payload)["event_id"] for s in reader.sealed_segments() for r in reader.records(s)]
    assert sealed == acknowledged


def test_cors_allow_list_and_fsync_per_request(server_factory: Callable[..., Server]) -> None:
    srv = server_factory(cors_allow_origins="https://a.example", spool_fsync_interval_ms=0)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    with srv.client() as c:
        allowed = c.options("/collect", headers={"Origin": "https://a.example", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://a.example"
        denied = c.options("/collect", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in denied.headers
        event = make_event()
        post = c.post("/collect", content=orjson.dumps(event), headers={**JSON, "Origin": "https://evil.example"})
        assert post.status_code == 202 and "access-control-allow-origin" not in post.headers
        assert event["event_id"] in spooled(srv.data_dir)
        counters = metrics(c)
        assert counters[("clickstream_spool_fsync_seconds_count", ())] >= 1  # fsynced before the 202


# -- consent pending: cookieless ids; first-party paths ----------------------------------------
def pending_event(**overrides: Any) -> dict[str, Any]:
    event = make_event(consent="pending", **overrides)
    del event["anonymous_id"], event["session_id"]
    return event


@pytest.fixture(scope="module")
def first_party(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A collector with first-party paths, a salt directory of its own, trusting 127.0.0.1 as proxy."""
    root = tmp_path_factory.mktemp("first-party")
    srv = start_server("collector", root / "data", {
        "CLICKSTREAM_SCRIPT_PATH": "/assets/site.js", "CLICKSTREAM_COLLECT_PATH": "/assets/i",
        "CLICKSTREAM_SALT_DIR": str(root / "salt")})
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def test_pending_events_get_a_cookieless_visitor_and_session_from_ip_and_user_agent(first_party: Server) -> None:
    ua = "Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0"
    sent = {
        ("a", "203.0.113.1", ua): pending_event(site_id="a.example"),
        ("a2", "203.0.113.1", ua): pending_event(site_id="a.example", type="cta_click"),
        ("b", "203.0.113.1", ua): pending_event(site_id="b.example"),
        ("ip2", "203.0.113.2", ua): pending_event(site_id="a.example"),
        ("ua2", "203.0.113.1", ua + " Edg/125"): pending_event(site_id="a.example"),
    }
    with first_party.client() as http:
        for (_, ip, agent), event in sent.items():
            answer = http.post("/assets/i", content=orjson.dumps(event),
                               headers={"User-Agent": agent, "X-Forwarded-For": ip})
            assert answer.status_code == 202, answer.text
        counters = metrics(http)
    stored = spooled(first_party.data_dir)
    got = {name: stored[event["event_id"]] for (name, _, _), event in sent.items()}
    assert all("consent" not in e and e["anonymous_id"].startswith("cookieless-") for e in got.values())
    assert (got["a"]["anonymous_id"], got["a"]["session_id"]) == (got["a2"]["anonymous_id"], got["a2"]["session_id"])
    assert len({got[n]["anonymous_id"] for n in ("a", "b", "ip2", "ua2")}) == 4
    assert len({got[n]["session_id"] for n in ("a", "b", "ip2", "ua2")}) == 4
    # the IP came from X-Forwarded-For (uvicorn trusts the proxy at 127.0.0.1): a hash of the salt of today
    salt = next((first_party.data_dir.parent / "salt").glob("*.salt")).read_bytes()
    assert got["ip2"]["ip_hash"] == hashlib.blake2b(b"203.0.113.2", key=salt, digest_size=8).hexdigest()
    assert counters[("clickstream_cookieless_sessions", ())] == 4


def test_first_party_paths_serve_the_script_pointing_at_the_collect_path_and_keep_the_defaults(
        first_party: Server) -> None:
    with first_party.client() as http:
        custom = http.get("/assets/site.js")
        default = http.get("/beacon.js")
        for path in ("/assets/i", "/collect"):
            assert http.post(path, content=orjson.dumps(make_event())).status_code == 202
        assert http.post("/assets/site.js", content=b"{}").status_code == 405
    assert custom.status_code == default.status_code == 200
    assert b'URL("i",' in custom.content and b'URL("collect",' in default.content
    assert custom.headers["etag"] != default.headers["etag"]


def test_a_pending_event_with_a_client_chosen_id_is_rejected_and_kept(server: Server, client: httpx.Client) -> None:
    event = {**pending_event(), "anonymous_id": "chosen-" + uuid.uuid4().hex}
    response = client.post("/collect", content=orjson.dumps(event), headers=JSON)
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "/anonymous_id"
    kept = [e["reason"] for e in rejected(server.data_dir)
            if isinstance(e.get("event"), dict) and e["event"].get("event_id") == event["event_id"]]
    assert kept == ["schema_violation"]
