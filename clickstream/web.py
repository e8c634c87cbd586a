"""Compose an ASGI app from components (clickstream.core.component.Component).

Components start in order and stop in reverse: `stop` of the collector runs before the
flusher's, so that `serve` on SIGTERM stops accepting, seals the spool, then flushes everything
spooled (docs/architecture.md "Command line").
Also serves `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus text format) and, when a
component describes its routes (an `openapi()` method), `GET /openapi.json` (clickstream.core.openapi).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from clickstream.core.component import Component
from clickstream.core.http import RawRoute
from clickstream.core.openapi import Operations, document


class OriginOnlyCORS(CORSMiddleware):
    """Starlette's CORSMiddleware, entered only by requests that carry an `Origin` header.

    Same-origin and server-to-server requests (no Origin) need no CORS headers; skipping the
    middleware for them saves ~20 µs a request on the collector's hot path (BENCHMARKS.md), which
    the middleware spends building a Headers object to find out there is nothing to do.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, _ in scope["headers"]:
                if name == b"origin":
                    await super().__call__(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(
    components: Sequence[Component],
    registry: CollectorRegistry,
    *,
    cors_allow_origins: Sequence[str] = ("*",),
    before_stop: Callable[[], Awaitable[object]] | None = None,
) -> ASGIApp:
    """An app serving every component's routes plus health, readiness and metrics (a Starlette
    app, behind `FastPaths` when a component has a `RawRoute`).

    At shutdown the app awaits `before_stop()` (e.g. "the query port's listener has closed", see
    clickstream/runner.py) before it stops the components in reverse order.
    """

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def readyz(request: Request) -> Response:
        checks = [check for comp in components for check in comp.readiness()]
        ok = all(check.ok for check in checks)
        body = {"ready": ok, "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks}}
        return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")

    async def metrics(request: Request) -> Response:
        for comp in components:
            comp.update_gauges()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    described: list[Operations] = [part() for comp in components
                                   if callable(part := getattr(comp, "openapi", None))]
    openapi_body = orjson.dumps(document("clickstream", described)) if described else b""

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    # the components' routes first: POST /collect, the hot path, is then matched at the first try
    routes: list[BaseRoute] = [route for comp in components for route in comp.routes()]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    if described:
        routes.append(Route("/openapi.json", openapi, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started: list[Component] = []
        try:
            for comp in components:
                comp.start()
                started.append(comp)
            # What start made (compiled schemas, the User-Agent parser, routes, caches) lives as long
            # as the process: frozen, it is left out of every later garbage collection. Under load,
            # the objects of requests in flight outlive the young generations and trigger full
            # collections, which otherwise walk all of it: ~60 ms pauses of the event loop, the
            # collector's p99 (BENCHMARKS.md "Collector"). https://docs.python.org/3/library/gc.html#gc.freeze
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                if before_stop is not None:  # only after a complete start: nothing else waits otherwise
                    await before_stop()
        finally:
            for comp in reversed(started):
                comp.stop()

    fast = {(route.path, method): route.app for route in routes if isinstance(route, RawRoute)
            for method in route.methods or ()}
    any_origin = "*" in cors_allow_origins
    middleware = [
        Middleware(
            OriginOnlyCORS,
            allow_origins=[] if any_origin else list(cors_allow_origins),
            # TRICKY: a regex matching everything makes Starlette echo the request's Origin
            # instead of answering "*", which credentialed fetches require.
            allow_origin_regex=".*" if any_origin else None,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["content-type", "authorization"],
            max_age=86400,
        )
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    return FastPaths(app, fast) if fast else app


class FastPaths:
    """The app, with the `RawRoute`s served first for requests without an `Origin` header: their
    raw ASGI app is called directly, without the middleware stack and the router (~6 µs a request
    of the collector's, BENCHMARKS.md "Collector"). Everything else, lifespan included, goes to `app`."""

    def __init__(self, app: Starlette, fast: dict[tuple[str, str], ASGIApp]) -> None:
        self.app = app
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.fast.get((scope["path"], scope["method"]))
            if endpoint is not None:
                for name, _ in scope["headers"]:
                    if name == b"origin":
                        break
                else:
                    await endpoint(scope, receive, send)
                    return
        await self.app(scope, receive, send)
