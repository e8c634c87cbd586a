"""Browser-test fixtures: Debian's Chromium driven by Playwright, the demo site on a free port,
and readers of what the beacon sent (`/collect` request bodies) and what the collector kept
(its spool on disk, the observable outcome before ClickHouse).

Chromium is never downloaded: `executable_path` points at the system binary.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

from clickstream.core.spool import SpoolReader
from deploy.demo import DemoConfig, create_app
from tests.conftest import ROOT, Server, free_port

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
#: A regular desktop Chrome: "HeadlessChrome" would (rightly) be flagged as a bot by the flusher.
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0.0.0 Safari/537.36")
#: TRICKY: the context's user_agent does not reach navigator.sendBeacon requests sent while a page
#: unloads (they went out as HeadlessChrome, so bots, and another cookieless visitor); the
#: browser-wide --user-agent does.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                 f"--user-agent={USER_AGENT}"]
ARTIFACTS = ROOT / "artifacts"
EVENT_SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "schemas/event.schema.json").read_text()))
#: What the collector adds to an event (collector.pipeline.process); stripped before re-validating.
SERVER_FIELDS = ("received_at", "user_agent", "ip_hash")


def wait_for(predicate: Callable[[], Any], timeout: float = 15, what: str = "condition",
             detail: Callable[[], Any] | None = None, page: Page | None = None) -> Any:
    """Poll `predicate` until it returns a truthy value (returned) or fail after `timeout` seconds,
    showing `detail()` (what was seen instead).

    TRICKY: Playwright's sync API runs event handlers (request events, `page.route` handlers) only
    while the test is inside a Playwright call: pass `page` when the condition depends on them,
    so the wait sleeps in `page.wait_for_timeout` instead of `time.sleep`.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f"; saw {detail()!r}" if detail else ""))
        if page is not None and not page.is_closed():
            page.wait_for_timeout(100)
        else:
            time.sleep(0.1)


def assert_valid_events(events: list[dict[str, Any]]) -> None:
    """Every event validates against schemas/event.schema.json (python-jsonschema, the oracle)."""
    for event in events:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in EVENT_SCHEMA.iter_errors(event)]
        assert not errors, f"invalid event {event}: {errors}"


@dataclass
class Recorder:
    """Every `/collect` body a browser context sent (through fetch; a page that is unloading sends
    with navigator.sendBeacon, which Playwright does not report), with the answers, and every
    uncaught page error."""

    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    acked: list[dict[str, Any]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    pending: set[Request] = field(default_factory=set)

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._request)
        context.on("requestfinished", self._finished)
        context.on("requestfailed", lambda request: self.pending.discard(request))

    def watch(self, page: Page) -> Page:
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        return page

    def _request(self, request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/collect"):
            self.batches.append(json.loads(request.post_data or "[]"))
            self.pending.add(request)

    def _finished(self, request: Request) -> None:
        self.pending.discard(request)
        response = request.response()
        if request.method == "POST" and request.url.endswith("/collect") and response and response.status == 202:
            self.acked.extend(json.loads(request.post_data or "[]"))

    @property
    def sent(self) -> list[dict[str, Any]]:
        return [event for batch in self.batches for event in batch]


@dataclass
class DemoSite:
    """The demo site served in a thread, wired to a collector (or `serve`) subprocess."""

    url: str
    collector: Server
    config: DemoConfig
    server: uvicorn.Server
    thread: threading.Thread

    def spooled(self) -> list[dict[str, Any]]:
        """Every event in the collector's spool, oldest first (stamped by the collector)."""
        return [orjson.loads(r.payload) for r in SpoolReader(self.collector.data_dir / "spool").iter_all()]

    def wait_spooled(self, predicate: Callable[[list[dict[str, Any]]], Any], what: str,
                     timeout: float = 15, page: Page | None = None) -> list[dict[str, Any]]:
        """Poll the spool until `predicate(events)` holds; return the events (`page`: see wait_for)."""
        seen: list[dict[str, Any]] = []

        def check() -> bool:
            seen[:] = self.spooled()
            return bool(predicate(seen))

        wait_for(check, timeout, what, detail=lambda: [(e["type"], e["url"]) for e in seen], page=page)
        return seen

    def rejected_files(self) -> list[Path]:
        rejected = self.collector.data_dir / "rejected"
        return [p for p in rejected.rglob("*") if p.is_file() and p.stat().st_size] if rejected.exists() else []

    def audit(self, recorder: Recorder) -> list[dict[str, Any]]:
        """The checks every test ends with: each event the beacon sent is schema-valid, the
        collector rejected none, no event_id was spooled twice, no error reached the page."""
        assert_valid_events(recorder.sent)
        events = self.spooled()
        assert_valid_events([{k: v for k, v in e.items() if k not in SERVER_FIELDS} for e in events])
        assert not self.rejected_files(), [p.read_text()[:2000] for p in self.rejected_files()]
        ids = [e["event_id"] for e in events]
        assert len(ids) == len(set(ids)), "an event_id was spooled twice"
        assert not recorder.page_errors, recorder.page_errors
        return events

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per test module (starting one costs about a second)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def new_context(browser: Browser, recorder: Recorder) -> Iterator[Callable[..., BrowserContext]]:
    """Fresh browser profiles (cookies, localStorage), recorded, closed at teardown."""
    contexts: list[BrowserContext] = []

    def factory(**kwargs: Any) -> BrowserContext:
        context = browser.new_context(user_agent=USER_AGENT, viewport={"width": 1280, "height": 860}, **kwargs)
        recorder.attach(context)
        contexts.append(context)
        return context

    yield factory
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context: Callable[..., BrowserContext], recorder: Recorder) -> Page:
    return recorder.watch(new_context().new_page())


@pytest.fixture
def demo_factory(server_factory: Callable[..., Server]) -> Iterator[Callable[..., DemoSite]]:
    """Start the demo site (uvicorn in a thread, free port) on `collector`, by default a fresh
    `clickstream collector`; keyword arguments go to DemoConfig."""
    sites: list[DemoSite] = []

    def factory(collector: Server | None = None, **config: Any) -> DemoSite:
        collector = collector or server_factory("collector")
        cfg = DemoConfig(collector_url=collector.url, stitch_url=collector.url, **config)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(cfg), host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started or not thread.is_alive(), 10, "the demo site to start")
        assert server.started, "the demo site did not start"
        site = DemoSite(f"http://127.0.0.1:{port}", collector, cfg, server, thread)
        sites.append(site)
        return site

    yield factory
    for site in sites:
        site.stop()


@pytest.fixture
def site(demo_factory: Callable[..., DemoSite]) -> DemoSite:
    return demo_factory()
