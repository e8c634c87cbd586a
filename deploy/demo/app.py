"""The demo site as a Starlette app; `POST /signup` is the conversion hook.

The hook turns the form into a lead: `lead_id` derived from the email (so a repeated signup is
the same lead and the stitcher answers 200 with the original event), `anonymous_id` and
`session_id` from the hidden fields the beacon filled, then `stitcher.client.StitchClient.stitch`.
The client is imported inside the handler so the site runs (and explains itself) without it.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from deploy.demo import pages

STATIC_DIR = Path(__file__).resolve().parent / "static"
HERO_COOKIE = "demo_hero"
DEFAULT_STITCH_TOKEN = "demo-stitch-token"
DEFAULT_SQL_PASSWORD = "demo-sql-password"
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # schemas/event.schema.json anonymous_id / session_id


@dataclass(frozen=True)
class DemoConfig:
    """Where the demo's browser-facing beacon and server-side stitcher live.

    `collector_url`: base URL the browser loads `/beacon.js` from (and posts events to);
    `stitch_url`: base URL of `POST /stitch` as seen from this server (the same `serve` here).
    """

    collector_url: str
    stitch_url: str
    stitch_token: str = field(default=DEFAULT_STITCH_TOKEN, repr=False)
    site_id: str = "demo.clickstream.local"
    respect_dnt: bool = False
    stitch_timeout_s: float = 5.0
    pipeline_hint: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DemoConfig:
        """Settings of `python -m deploy.demo`: CLICKSTREAM_PORT / CLICKSTREAM_HOST (the pipeline),
        CLICKSTREAM_STITCH_TOKEN, DEMO_COLLECTOR_URL (browser-facing override), DEMO_STITCH_URL
        (server-side override, e.g. a separate stitcher), DEMO_SITE_ID, DEMO_RESPECT_DNT=1.
        Raises ValueError naming the variable when a port is not a number."""
        env = dict(os.environ if environ is None else environ)
        port = env_port(env, "CLICKSTREAM_PORT", 8000)
        host = env.get("CLICKSTREAM_HOST", "127.0.0.1")
        local = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
        return cls(
            collector_url=env.get("DEMO_COLLECTOR_URL", local).rstrip("/"),
            stitch_url=env.get("DEMO_STITCH_URL", local).rstrip("/"),
            stitch_token=env.get("CLICKSTREAM_STITCH_TOKEN") or DEFAULT_STITCH_TOKEN,
            site_id=env.get("DEMO_SITE_ID", cls.site_id),
            respect_dnt=env.get("DEMO_RESPECT_DNT", "") in ("1", "true", "yes", "on"),
        )


def app_from_env() -> Starlette:
    """The demo site alone, configured from the environment (`DemoConfig.from_env`): the factory of
    `uvicorn --factory deploy.demo.app:app_from_env` in deploy/compose.yaml."""
    return create_app(DemoConfig.from_env())


def env_port(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{name}={raw!r} is not a port number")
    return int(raw)


def lead_id_for(email: str) -> str:
    """A stable lead id per email (no PII in it): the same person signing up twice is one lead."""
    return "lead-" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:20]


def create_app(config: DemoConfig) -> Starlette:
    """The demo site: `/` hub, `/lp/{analytics|privacy}`, `/features`, `/pricing`, `POST /signup`."""
    page = pages.Page(config.collector_url, config.site_id, config.respect_dnt, config.pipeline_hint)

    async def hub(request: Request) -> Response:
        return HTMLResponse(pages.hub(page))

    async def landing(request: Request) -> Response:
        name = request.path_params.get("name", "analytics")
        if name not in pages.LANDINGS:
            return HTMLResponse(pages.error(page, "Not found", f"No landing page {name!r}."), status_code=404)
        # Server-side A/B assignment, sticky per browser; ?hero=A|B forces a variant (tests, demos).
        forced = request.query_params.get("hero", "")
        variant = forced if forced in pages.HERO else request.cookies.get(HERO_COOKIE, "")
        if variant not in pages.HERO:
            variant = random.choice(sorted(pages.HERO))
        response = HTMLResponse(pages.landing(page, name, request.url.path, variant))
        response.set_cookie(HERO_COOKIE, variant, max_age=90 * 86400, samesite="lax")
        return response

    async def signup(request: Request) -> Response:
        # application/x-www-form-urlencoded, parsed by hand: request.form() needs python-multipart
        fields = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        email, plan, anonymous_id, session_id = (
            fields.get(name, [""])[0].strip() for name in ("email", "plan", "anonymous_id", "session_id"))
        if "@" not in email:
            return _error(400, "Check your email", "Please enter an email address.")
        if not _ID.match(anonymous_id):
            return _error(400, "No visitor id", "The form came without the beacon's anonymous id (beacon.js blocked, "
                          "or Do Not Track honoured), so there is no attribution to record.")
        properties = {"plan": plan or "starter", "email_domain": email.rsplit("@", 1)[1].lower()}
        return await _stitch(lead_id_for(email), anonymous_id, session_id if _ID.match(session_id) else None,
                             properties)

    async def _stitch(lead_id: str, anonymous_id: str, session_id: str | None,
                      properties: dict[str, Any]) -> Response:
        try:
            from stitcher.client import StitchClient  # lazily: written by the stitcher issue (4)
        except ImportError as exc:
            return _error(503, "Stitcher unavailable", f"stitcher.client cannot be imported ({exc}); "
                          "the lead was not recorded.")

        def call() -> Any:
            with StitchClient(config.stitch_url, config.stitch_token, timeout_s=config.stitch_timeout_s) as client:
                return client.stitch(lead_id, anonymous_id, session_id=session_id, properties=properties,
                                     site_id=config.site_id)

        try:
            result = await run_in_threadpool(call)
        except Exception as exc:  # the client raises after its retries; the visitor gets a page, not a 500
            status = getattr(exc, "status_code", None)  # StitchRejected / StitchConflict carry the answer's
            if status == 409:
                return _error(409, "Already signed up", "This email converted before, from another visit; "
                              "its lead stays as first recorded (attribution is frozen).")
            if isinstance(status, int) and 400 <= status < 500:
                return _error(502, "Stitcher refused the lead", f"POST /stitch answered {exc}")
            return _error(503, "Stitcher unavailable",
                          f"POST {config.stitch_url}/stitch failed: {type(exc).__name__}: {exc}")
        status = 201 if result.created else 200
        return HTMLResponse(pages.thanks(page, lead_id, result.created, result.event), status_code=status)

    def _error(status: int, title: str, message: str) -> Response:
        return HTMLResponse(pages.error(page, title, message), status_code=status)

    routes = [
        Route("/", hub),
        Route("/lp/{name}", landing),
        Route("/features", landing),
        Route("/pricing", landing),
        Route("/signup", signup, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(routes=routes)
