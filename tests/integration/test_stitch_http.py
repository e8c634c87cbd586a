"""POST /stitch over HTTP on a real `clickstream serve` (real chDB, real spool, real flusher).

Statuses (401, 503, 400, 413, 201, 200 byte for byte, 409), freshness (a page view POSTed to
/collect and stitched right after is attributed), lead_events written once, metrics, and the Python
client (sync and async) against the same server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import orjson
import pytest

from stitcher.client import AsyncStitchClient, StitchClient, StitchConflict, StitchRejected, StitchUnavailable
from stitcher.event import event_id_for
from tests.conftest import (
    SCHEMAS_DIR,
    Server,
    free_port,
    make_event,
    now_ms,
    sql_rows,
    start_server,
    wait_for,
    wait_for_fold,
)

UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
      "Safari/605.1.15")
TOKEN = "stitch-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LEAD_SCHEMA = jsonschema.Draft202012Validator(orjson.loads((SCHEMAS_DIR / "lead_created.schema.json").read_bytes()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server("serve", tmp_path_factory.mktemp("stitch-http") / "data", {
        "CLICKSTREAM_STITCH_TOKEN": TOKEN, "CLICKSTREAM_SQL_PASSWORD": "adm", "CLICKSTREAM_FOLD_INTERVAL_S": "0.5",
        "CLICKSTREAM_STITCH_MAX_BODY_BYTES": "4096", "CLICKSTREAM_STITCH_SESSION_WAIT_S": "0.5",
    })
    yield s
    s.stop()


def collect(server: Server, *events: dict[str, Any]) -> None:
    response = server.client(headers={"User-Agent": UA}).post("/collect", json=list(events))
    assert response.status_code == 202 and response.json()["rejected"] == 0, response.text


def stitch(server: Server, body: Any, headers: dict[str, str] | None = None) -> Any:
    return server.client().post("/stitch", content=orjson.dumps(body), headers=AUTH if headers is None else headers)






def test_without_a_configured_token_the_route_is_off_and_says_how_to_enable_it(
    server_factory: Callable[..., Server],
) -> None:
    off = server_factory("serve")
    response = off.client().post("/stitch", json={"lead_id": "L", "anonymous_id": "a"}, headers=AUTH)
    assert response.status_code == 503
    assert "CLICKSTREAM_STITCH_TOKEN" in response.json()["message"]


def test_missing_or_wrong_token_is_401(server: Server) -> None:
    body = {"lead_id": "L-auth", "anonymous_id": "a", "site_id": "example.com"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
        response = stitch(server, body, headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
    assert stitch(server, body).status_code == 201


@pytest.mark.parametrize(("body", "path"), [
    ({"anonymous_id": "a"}, ""),
    ({"lead_id": "L-bad", "anonymous_id": "has space"}, "/anonymous_id"),
    ({"lead_id": "L-bad", "anonymous_id": "a", "occurred_at": "2024-02-30T10:00:00Z"}, "/occurred_at"),
    ({"lead_id": "L-bad", "anonymous_id": "a", "properties": {"nested": {"x": 1}}}, "/properties/nested"),
    ({"lead_id": "L-bad", "anonymous_id": "a", "unknown": True}, ""),
])
def test_bad_body_is_400_with_index_path_message(server: Server, body: dict[str, Any], path: str) -> None:
    response = stitch(server, body)
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert path in [e["path"] for e in errors]
    assert all(e["index"] == 0 and e["message"] for e in errors)


def test_malformed_and_oversized_bodies(server: Server) -> None:
    malformed = server.client().post("/stitch", content=b'{"lead_id": ', headers=AUTH)
    assert malformed.status_code == 400 and malformed.json()["errors"][0]["path"] == ""
    big = {"lead_id": "L-big", "anonymous_id": "a", "properties": {f"k{i}": "x" * 200 for i in range(30)}}
    assert stitch(server, big).status_code == 413


def test_fresh_landing_page_view_then_201_then_identical_200_then_409(server: Server) -> None:
    landing = make_event(
        anonymous_id="fresh-visitor", session_id="fresh-s1", ts=now_ms(),
        url="https://example.com/pricing?utm_source=google&utm_medium=cpc&utm_campaign=brand&utm_term=crm",
        referrer="https://www.google.com/", variants={"pricing_page": "annual_first"},
    )
    collect(server, landing)
    body = {"lead_id": "L-fresh", "anonymous_id": "fresh-visitor", "properties": {"plan": "team", "seats": 5}}
    created = stitch(server, body)  # right after the 202: the view is still in the spool
    assert created.status_code == 201, created.text
    event = orjson.loads(created.content)
    LEAD_SCHEMA.validate(event)
    touch = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "brand", "utm_term": "crm",
             "utm_content": "", "referrer_host": "google.com", "channel": "paid_search", "landing_path": "/pricing"}
    assert {k: event["first_touch"][k] for k in touch} == touch
    assert event["last_touch"] == event["first_touch"]
    assert event["variants"] == {"pricing_page": "annual_first"}
    assert (event["site_id"], event["session_id"], event["landing_path"]) == ("example.com", "fresh-s1", "/pricing")
    assert event["event_id"] == event_id_for("L-fresh")
    assert event["properties"] == {"plan": "team", "seats": 5}

    repeat = stitch(server, {"properties": {"seats": 5, "plan": "team"}, "anonymous_id": "fresh-visitor",
                             "lead_id": "L-fresh"})
    assert repeat.status_code == 200
    assert repeat.content == created.content

    conflict = stitch(server, {**body, "properties": {"plan": "enterprise", "seats": 5}})
    assert conflict.status_code == 409
    assert conflict.json()["fields"] == ["properties"]
    assert stitch(server, {**body, "anonymous_id": "someone-else"}).json()["fields"] == ["anonymous_id"]

    query = "SELECT count(), any(payload), any(last_touch.utm_campaign) FROM lead_events WHERE lead_id = 'L-fresh'"
    wait_for(lambda: sql_rows(server, query)[0][0] >= 1)
    assert sql_rows(server, query) == [[1, created.content.decode(), "brand"]]
    # the identity link: the lead joins the visitor's sessions
    wait_for_fold(server)  # v_lead_sessions reads v_sessions, the roll-ups
    linked = sql_rows(server, "SELECT lead_id, entry_path, utm_campaign FROM v_lead_sessions WHERE lead_id = 'L-fresh'")
    assert linked == [["L-fresh", "/pricing", "brand"]]
    metrics = server.client().get("/metrics").text
    assert "clickstream_stitcher_repeats_total 1.0" in metrics
    assert "clickstream_stitcher_conflicts_total 2.0" in metrics


def unattributed(server: Server, reason: str = "no_visitor_data") -> float:
    prefix = f'clickstream_stitcher_unattributed_total{{reason="{reason}"}} '
    line = next(line for line in server.client().get("/metrics").text.splitlines() if line.startswith(prefix))
    return float(line.removeprefix(prefix))


def test_unknown_visitor_is_recorded_unattributed_never_refused(server: Server) -> None:
    """No telemetry of the visitor after the bounded wait: 201, site from CLICKSTREAM_STITCH_DEFAULT_SITE,
    counted under its reason."""
    before = unattributed(server)
    response = stitch(server, {"lead_id": "L-ghost-0", "anonymous_id": "never-seen-0"})
    assert response.status_code == 201, response.text
    ghost = orjson.loads(response.content)
    LEAD_SCHEMA.validate(ghost)
    assert (ghost["site_id"], ghost["session_id"], ghost["first_touch"]["ts"]) == ("unknown", "", None)
    assert unattributed(server) == before + 1
    created = stitch(server, {"lead_id": "L-ghost", "anonymous_id": "never-seen", "site_id": "example.com",
                              "occurred_at": "2026-01-02T03:04:05.678+01:00"})
    assert created.status_code == 201
    event = orjson.loads(created.content)
    LEAD_SCHEMA.validate(event)
    assert event["occurred_at"] == "2026-01-02T02:04:05.678Z"
    assert event["first_touch"]["channel"] == "direct" and event["first_touch"]["ts"] is None
    assert (event["session_id"], event["landing_path"], event["variants"]) == ("", "", {})


def test_python_clients_sync_and_async(server: Server) -> None:
    collect(server, make_event(anonymous_id="client-visitor", session_id="client-s1", url="https://example.com/trial"))
    with StitchClient(server.url, TOKEN) as client:
        first = client.stitch("L-client", "client-visitor", properties={"source": "sdk"})
        again = client.stitch("L-client", "client-visitor", properties={"source": "sdk"})
        with pytest.raises(StitchConflict) as conflict:
            client.stitch("L-client", "client-visitor", properties={"source": "other"})
        with pytest.raises(StitchRejected) as rejected:
            client.stitch("L-client-2", "bad id")
    assert (first.status_code, first.created, again.status_code, again.created) == (201, True, 200, False)
    assert again.event == first.event and first.event["landing_path"] == "/trial"
    assert conflict.value.status_code == 409 and conflict.value.body["fields"] == ["properties"]
    assert rejected.value.status_code == 400 and rejected.value.error == "invalid"
    with StitchClient(server.url, "wrong") as wrong, pytest.raises(StitchRejected) as unauthorized:
        wrong.stitch("L-client", "client-visitor")
    assert unauthorized.value.status_code == 401

    async def run_async() -> tuple[Any, Any]:
        async with AsyncStitchClient(server.url, TOKEN) as aclient:
            repeat = await aclient.stitch("L-client", "client-visitor", properties={"source": "sdk"})
            new = await aclient.stitch("L-async", "client-visitor", session_id="client-s1")
            return repeat, new

    repeat, new = asyncio.run(run_async())
    assert (repeat.status_code, repeat.event) == (200, first.event)
    assert new.created and new.event["session_id"] == "client-s1"


def test_client_gives_up_after_its_retries_on_connection_errors() -> None:
    with StitchClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout_s=1, retries=2) as client, \
            pytest.raises(StitchUnavailable):
        client.stitch("L-nowhere", "a")


def test_standalone_stitcher_command(server_factory: Callable[..., Server]) -> None:
    """`clickstream stitcher` (no collector, no flusher in the process) answers /stitch and /readyz."""
    alone = server_factory("stitcher", stitch_token=TOKEN)
    ready = alone.client().get("/readyz").json()
    assert ready["ready"] and ready["checks"]["clickhouse_reachable"]["ok"]
    created = stitch(alone, {"lead_id": "L-alone", "anonymous_id": "a", "site_id": "example.com"})
    assert created.status_code == 201
    LEAD_SCHEMA.validate(orjson.loads(created.content))
    assert alone.client().post("/collect", json={}).status_code == 404
