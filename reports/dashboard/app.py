"""The built-in dashboard: routes on the query port's listener (clickstream/runner.py composes them).

    GET  /dashboard                   the page (static/index.html); without credentials: 401 + login form
                                      (with `?auth=basic` also a Basic challenge: the browser's prompt)
    GET  /dashboard/login             the login form
    POST /dashboard/login             user + password (form) -> 303 to /dashboard + session cookie; 401 else
    POST /dashboard/logout            forget the login, clear the cookie -> 303 to the form
    GET  /dashboard/static/<file>     the page's script, styles and the vendored chart library
    GET  /dashboard/api/queries       every panel's SQL and its parameters (reports/dashboard/queries.py)
    GET  /dashboard/api/config        the beacon's script URL (empty state), filters, funnel limits
    GET  /dashboard/api/experiments?site=S
                                      `clickstream experiments --format json` for site S (the same
                                      Python code: reports/experiments.py on v_variant_lift)

Credentials: the query port's own (`CLICKSTREAM_SQL_USER` / `CLICKSTREAM_SQL_PASSWORD`), as HTTP Basic
(then a session cookie is set too, so the page's queries to `POST /` carry it), or the login form's
session cookie (reports/query_port/logins.py). Without them every route but the login form answers
401 with no data. Responses are `Cache-Control: no-store`; pages set a Content-Security-Policy that
allows only this origin's scripts, styles and fetches (no CDN: the machine may be offline).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Final
from urllib.parse import parse_qs

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from reports import versions
from reports.dashboard import queries
from reports.experiments import LIFT_SQL, build_report
from reports.query_port import QueryPort, QueryPortError
from reports.query_port.logins import COOKIE_NAME

#: Files of static/ the page loads (read once, at start); PUBLIC ones are served without credentials.
STATIC_FILES: Final = ("login.css", "dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css",
                       "vendor/uPlot.LICENSE", "vendor/VERSION")
PUBLIC_FILES: Final = frozenset({"login.css"})
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_NO_STORE = {"Cache-Control": "no-store", "Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
             "Referrer-Policy": "same-origin"}
_MAX_FORM_BYTES = 16 * 1024


@dataclass(frozen=True)
class DashboardConfig:
    """What the page needs besides the port: the beacon's URL for the empty state's script tag."""

    script_url: str = "http://127.0.0.1:8000/beacon.js"


def _read(name: str) -> bytes:
    resource = files("reports.dashboard").joinpath("static")
    for part in name.split("/"):
        resource = resource.joinpath(part)
    return resource.read_bytes()


#: The definition version comments of the roll-ups the bitmap queries read, and whether the fold ever ran.
_BITMAP_VERSIONS_SQL: Final = (
    "SELECT name, comment, (SELECT count() FROM fold_runs) FROM system.tables WHERE database = currentDatabase() "
    "AND name IN (" + ", ".join(f"'{name}'" for name in queries.BITMAP_TABLES) + ")")


class Dashboard:
    """The dashboard's routes over `port` (its credentials, logins and query slots)."""

    def __init__(self, port: QueryPort, config: DashboardConfig | None = None) -> None:
        self.port = port
        self.config = config or DashboardConfig()
        self._index = _read("index.html")
        self._bitmaps_live = False
        self._login = _read("login.html").decode()
        self._static: dict[str, tuple[bytes, str, str]] = {}
        for name in STATIC_FILES:
            body = _read(name)
            media = mimetypes.guess_type(name)[0] or "text/plain"
            if media.startswith("text/") or media.endswith("javascript"):
                media += "; charset=utf-8"
            self._static[name] = (body, media, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    def routes(self) -> Sequence[BaseRoute]:
        """The routes of the module docstring, for QueryPort.listener_app(extra_routes)."""
        return [
            Route("/dashboard", self.page, methods=["GET", "HEAD"]),
            Route("/dashboard/", self.page, methods=["GET", "HEAD"]),
            Route("/dashboard/login", self.login_form, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/dashboard/static/{name:path}", self.static, methods=["GET", "HEAD"]),
            Route("/dashboard/api/queries", self.api_queries, methods=["GET"]),
            Route("/dashboard/api/config", self.api_config, methods=["GET"]),
            Route("/dashboard/api/experiments", self.api_experiments, methods=["GET"]),
        ]

    # -- authentication ----------------------------------------------------------------------------

    def _login_page(self, status: int, message: str = "") -> Response:
        text = self._login.replace("{{message}}", html.escape(message)).replace("{{user}}",
                                                                                html.escape(self.port.config.user))
        return Response(text, status_code=status, media_type="text/html; charset=utf-8", headers=_NO_STORE)

    def _denied(self) -> Response:
        return Response(orjson.dumps({"error": "unauthorized", "message": "log in at /dashboard/login"}),
                        status_code=401, media_type="application/json", headers=_NO_STORE)

    def _set_login(self, response: Response) -> Response:
        response.set_cookie(COOKIE_NAME, self.port.logins.create(), max_age=int(self.port.logins.ttl_s), path="/",
                            secure=True, httponly=True, samesite="strict")
        return response

    async def page(self, request: Request) -> Response:
        """The page (200, sets the cookie after HTTP Basic), or 401 with the login form."""
        if not self.port.authenticated(request):
            response = self._login_page(401)
            if request.query_params.get("auth") == "basic":  # ask the browser for HTTP Basic credentials
                response.headers["WWW-Authenticate"] = 'Basic realm="clickstream dashboard", charset="UTF-8"'
            return response
        response = Response(self._index, media_type="text/html; charset=utf-8", headers=_NO_STORE)
        if not self.port.logins.valid(request.cookies.get(COOKIE_NAME)):
            self._set_login(response)  # HTTP Basic: the page's fetches to POST / then carry the cookie
        return response

    async def login_form(self, request: Request) -> Response:
        """The login form (200)."""
        return self._login_page(200)

    async def login(self, request: Request) -> Response:
        """Form fields `user`, `password` (urlencoded, at most 16 KiB): 303 to /dashboard with the
        session cookie, or 401 with the form and a message (counted as an auth failure)."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM_BYTES:
                return self._login_page(413, "The form is too large.")
        form = parse_qs(body.decode("utf-8", "replace"))
        user = form.get("user", [""])[0]
        password = form.get("password", [""])[0]
        # TRICKY: both comparisons always run, in constant time (as reports/query_port/request.py).
        user_ok = hmac.compare_digest(user.encode(), self.port.config.user.encode())
        password_ok = hmac.compare_digest(password.encode(), self.port.config.password.encode())
        if not (user_ok and password_ok):
            self.port.counters["auth_failures"] += 1
            return self._login_page(401, "Wrong user name or password.")
        return self._set_login(RedirectResponse("/dashboard", status_code=303, headers=_NO_STORE))

    async def logout(self, request: Request) -> Response:
        """Forget the cookie's login, expire the cookie, 303 to the form."""
        self.port.logins.revoke(request.cookies.get(COOKIE_NAME))
        response = RedirectResponse("/dashboard/login", status_code=303, headers=_NO_STORE)
        response.delete_cookie(COOKIE_NAME, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # -- files and APIs ---------------------------------------------------------------------------------

    async def static(self, request: Request) -> Response:
        """A file of STATIC_FILES (ETag, 304 on If-None-Match), 404 for any other name, 401 without
        credentials unless PUBLIC_FILES."""
        name = request.path_params["name"]
        if name not in PUBLIC_FILES and not self.port.authenticated(request):
            return self._denied()
        found = self._static.get(name)
        if found is None:
            return Response(b"not found\n", status_code=404, media_type="text/plain")
        body, media, etag = found
        headers = {"ETag": etag, "Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media, headers=headers)

    async def api_queries(self, request: Request) -> Response:
        """queries.catalog() as JSON: {name: {"sql", "params"}}; the queries over the roll-ups' visitor
        bitmaps once every table of queries.BITMAP_TABLES holds them (`bitmaps_live`), else the queries
        over their uniqExact states."""
        if not self.port.authenticated(request):
            return self._denied()
        live = await self.bitmaps_live()
        return Response(orjson.dumps(queries.catalog(bitmaps=live)), media_type="application/json",
                        headers=_NO_STORE)

    async def bitmaps_live(self) -> bool:
        """Whether every roll-up of queries.BITMAP_TABLES holds definition version queries.BITMAP_VERSION or
        later (reports/versions.py: the table comment), so its visitor bitmaps are filled; a version 1 table
        (an upgrade whose new version the fold is still building) has empty ones. Kept once true: a table's
        version only goes up. Also true before the first fold: no roll-up row exists yet, and that fold
        adopts the declared versions (reports/versions.py `prepare`). False when it cannot be read (the
        uniqExact queries are right either way)."""
        if self._bitmaps_live:
            return True
        try:
            body = await self.port.query(_BITMAP_VERSIONS_SQL, fmt="JSONCompact")
        except QueryPortError:
            return False
        rows = orjson.loads(body)["data"]
        found = {str(name): versions.version_of(str(comment)) for name, comment, _ in rows}
        never_folded = bool(rows) and int(rows[0][2]) == 0
        self._bitmaps_live = never_folded or all(
            (found.get(name) or 0) >= queries.BITMAP_VERSION for name in queries.BITMAP_TABLES)
        return self._bitmaps_live

    async def api_config(self, request: Request) -> Response:
        """{"script_url", "filters", "source_dimensions", "max_funnel_steps"}."""
        if not self.port.authenticated(request):
            return self._denied()
        body = {"script_url": self.config.script_url, "filters": list(queries.FILTERS),
                "source_dimensions": list(queries.SOURCE_DIMENSIONS), "max_funnel_steps": queries.MAX_FUNNEL_STEPS}
        return Response(orjson.dumps(body), media_type="application/json", headers=_NO_STORE)

    async def api_experiments(self, request: Request) -> Response:
        """{"experiments": [...]} of reports.experiments.build_report for `site` (all sites without);
        503 {"error": "query_failed", "message"} when v_variant_lift cannot be read."""
        if not self.port.authenticated(request):
            return self._denied()
        site = request.query_params.get("site") or None
        try:
            body = await self.port.query(LIFT_SQL, fmt="JSONCompact")
        except QueryPortError as exc:
            return Response(orjson.dumps({"error": "query_failed", "message": exc.body("")}), status_code=503,
                            media_type="application/json", headers=_NO_STORE)
        rows = orjson.loads(body)["data"]
        report = build_report(rows, site=site)
        return Response(orjson.dumps({"experiments": report}), media_type="application/json", headers=_NO_STORE)
