"""The demo site: `python -m deploy.demo` runs the pipeline and the site
together, and the signup form hands the beacon's ids to the conversion hook."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from playwright.sync_api import Page

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import ARTIFACTS, DemoSite, Recorder, wait_for

pytestmark = pytest.mark.e2e


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_python_m_deploy_demo_starts_the_pipeline_and_the_site_and_stops_both(tmp_path: Path) -> None:
    pipeline_port, demo_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLICKSTREAM_", "DEMO_"))}
    env.update(CLICKSTREAM_PORT=str(pipeline_port), DEMO_PORT=str(demo_port),
               CLICKSTREAM_DATA_DIR=str(tmp_path / "data"), CLICKSTREAM_LOG_LEVEL="warning")
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.demo"], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: proc.poll() is not None or _answers(f"http://127.0.0.1:{demo_port}/"), 90,
                 "the demo site", detail=log.read_text)
        assert proc.poll() is None, log.read_text()
        landing = httpx.get(f"http://127.0.0.1:{demo_port}/lp/analytics").text
        assert f'src="http://127.0.0.1:{pipeline_port}/beacon.js"' in landing
        beacon = httpx.get(f"http://127.0.0.1:{pipeline_port}/beacon.js")
        assert beacon.status_code == 200 and "clickstream" in beacon.text
        output = log.read_text()
        assert f"http://127.0.0.1:{pipeline_port}" in output and f"http://127.0.0.1:{demo_port}/" in output
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    assert code == 0, log.read_text()
    assert _port_closed(pipeline_port) and _port_closed(demo_port)


def test_signup_form_posts_the_beacon_ids_and_explains_a_missing_stitcher(
        site: DemoSite, page: Page, recorder: Recorder) -> None:
    page.goto(f"{site.url}/lp/analytics?utm_source=google&utm_medium=cpc&utm_campaign=spring_sale&hero=B")
    assert page.text_content("#hero-headline") == "Your analytics, on your servers, in five minutes."
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-landing.png"), full_page=True)

    page.click("header a[href='/pricing']")
    page.click("#cta")  # preselects the plan
    page.fill("input[name=email]", "ada@example.org")
    with page.expect_request(lambda r: r.url.endswith("/signup") and r.method == "POST") as posted:
        page.click("button[type=submit]")
    form = {k: v[0] for k, v in parse_qs(posted.value.post_data or "").items()}
    assert form["anonymous_id"] == next(c["value"] for c in page.context.cookies() if c["name"] == "cs_id")
    assert form["plan"] == "team"
    # The collector alone has no POST /stitch: the hook shows why the lead was not recorded.
    page.wait_for_selector("#error")
    assert page.title() in ("Stitcher unavailable", "Stitcher refused the lead")

    events = site.wait_spooled(lambda evs: any(e["type"] == "signup_submit" for e in evs), "the submit event")
    submit = next(e for e in events if e["type"] == "signup_submit")
    assert (form["anonymous_id"], form["session_id"]) == (submit["anonymous_id"], submit["session_id"])
    site.audit(recorder)


def test_signup_without_beacon_ids_is_refused_with_an_explanation(site: DemoSite) -> None:
    response = httpx.post(f"{site.url}/signup", data={"email": "ada@example.org", "plan": "team"})
    assert response.status_code == 400
    assert "anonymous id" in response.text
