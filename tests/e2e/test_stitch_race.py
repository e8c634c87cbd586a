"""Suite 4, the stitch races the beacon, in a real browser (Chromium via Playwright).

The visitor lands from a campaign and submits the signup form at once; the demo's conversion hook
calls /stitch immediately, while the beacon's batch (sent with sendBeacon as the page hides) is
still on its way: a proxy between the browser and `serve` holds every POST /collect for
DELAY_S. With the stitcher's wait (CLICKSTREAM_STITCH_SESSION_WAIT_S) the lead is attributed to the
landing page and campaign; with the wait off (the control) the same race freezes a lead without
its session, counted as `session_not_seen`: the test can tell the two apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import BrowserContext
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import Server, free_port
from tests.e2e.conftest import DemoSite, Recorder, wait_for
from tests.reliability.leads_support import metric, report

pytestmark = pytest.mark.e2e

STITCH_TOKEN = "race-stitch-token"
DELAY_S = 4.0  # far longer than a stitch takes, even on a loaded machine (the control must lose the race)
CAMPAIGN = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "race_day"}
HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "content-encoding"}


@dataclasses.dataclass
class DelayingProxy:
    """A reverse proxy to `target` that holds each POST /collect for `delay_s` (a slow network)."""

    target: str
    delay_s: float
    url: str = ""
    held: int = 0
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    def start(self) -> DelayingProxy:
        client = httpx.AsyncClient(base_url=self.target, timeout=30)

        async def forward(request: Request) -> Response:
            body = await request.body()  # whole, before the hold (the browser may leave the page)
            if request.method == "POST" and request.url.path == "/collect":
                self.held += 1
                await asyncio.sleep(self.delay_s)
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
            answer = await client.request(request.method, request.url.path, params=request.query_params,
                                          content=body, headers=headers)
            return Response(answer.content, status_code=answer.status_code,
                            headers={k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS})

        app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "HEAD", "POST", "OPTIONS"])])
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server is not None and self.server.started, 10, "the proxy to start")
        return self

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True  # held requests are forwarded first
            self.thread.join(timeout=30)


@pytest.fixture
def proxies() -> Iterator[Callable[[Server], DelayingProxy]]:
    started: list[DelayingProxy] = []

    def factory(server: Server) -> DelayingProxy:
        proxy = DelayingProxy(server.url, DELAY_S).start()
        started.append(proxy)
        return proxy

    yield factory
    for proxy in started:
        proxy.stop()


def land_and_sign_up_at_once(site: DemoSite, context: BrowserContext, recorder: Recorder) -> tuple[dict[str, Any], str]:
    """Open the landing page from the campaign, submit the form at once; the lead and the session id."""
    page = recorder.watch(context.new_page())
    query = "&".join(f"{k}={v}" for k, v in CAMPAIGN.items())
    page.goto(f"{site.url}/lp/analytics?{query}&hero=B")
    wait_for(lambda: page.input_value("input[name=session_id]"), 10, "the beacon to fill the form", page=page)
    session_id = page.input_value("input[name=session_id]")
    page.fill("input[name=email]", "racer@example.org")
    page.click("button[type=submit]")  # the page view is still in the beacon's 1-second batch
    page.wait_for_selector("#lead-event, #error", timeout=60_000)
    assert page.title() == "Thanks for signing up", page.text_content("body")
    return json.loads(page.text_content("#lead-event") or "{}"), session_id


@pytest.mark.parametrize("wait_s", ["15", "0"], ids=["waits", "control-no-wait"])
def test_form_submitted_at_once_on_the_landing_page_is_attributed(
        wait_s: str, server_factory: Callable[..., Server], demo_factory: Callable[..., DemoSite],
        proxies: Callable[[Server], DelayingProxy], new_context: Callable[..., BrowserContext],
        recorder: Recorder) -> None:
    serve = server_factory("serve", stitch_token=STITCH_TOKEN, stitch_session_wait_s=wait_s)
    proxy = proxies(serve)
    site = demo_factory(dataclasses.replace(serve, url=proxy.url), stitch_token=STITCH_TOKEN, stitch_timeout_s=30.0)
    lead, session_id = land_and_sign_up_at_once(site, new_context(), recorder)
    metrics = serve.client().get("/metrics").text
    assert proxy.held >= 1  # the beacon's batch went through the slow hop
    assert lead["session_id"] == session_id
    if wait_s != "0":
        assert lead["landing_path"] == "/lp/analytics", lead
        assert {k: lead["first_touch"][k] for k in CAMPAIGN} == CAMPAIGN, lead
        assert lead["variants"] == {"hero": "B"}
        assert metric(metrics, "clickstream_stitcher_session_waits_total") == 1
        assert metric(metrics, "clickstream_stitcher_unattributed_total", reason="session_not_seen") == 0
        assert metric(metrics, "clickstream_stitcher_unattributed_total", reason="page_view_not_seen") == 0
    else:  # the race as it was: the lead is frozen before its page view arrived
        assert (lead["landing_path"], lead["first_touch"]["utm_campaign"], lead["variants"]) == ("", "", {}), lead
        assert metric(metrics, "clickstream_stitcher_unattributed_total", reason="no_visitor_data") == 1
    report("stitch_race_browser", wait_s=float(wait_s), beacon_delay_s=DELAY_S,
           landing_path=lead["landing_path"], campaign=lead["first_touch"]["utm_campaign"])
