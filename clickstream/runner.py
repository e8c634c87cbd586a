"""Build and run the processes behind the CLI: collector, flusher, stitcher, serve (all in one)."""

from __future__ import annotations

import logging
import signal

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from clickstream.core.clickhouse import connect
from clickstream.core.cluster import open_configured
from clickstream.core.component import Component
from clickstream.core.settings import Settings
from clickstream.web import create_app
from collector.app import Collector
from collector.metrics import CollectorMetrics
from flusher.loop import Flusher, FlusherMetrics
from reports.sql import SqlEndpoint
from stitcher.service import Stitcher

log = logging.getLogger(__name__)


def collector_app(settings: Settings) -> Starlette:
    """The collector alone: /collect, /beacon.js, /healthz, /readyz, /metrics."""
    registry = CollectorRegistry()
    collector = Collector(settings, CollectorMetrics(registry))
    return create_app([collector], registry, cors_allow_origins=settings.cors_allow_origins)


def serve_components(settings: Settings, registry: CollectorRegistry) -> list[Component]:
    """collector + flusher + stitcher + POST /sql in one process owning ClickHouse."""
    client = open_configured(settings)
    collector = Collector(settings, CollectorMetrics(registry))
    flusher = Flusher(settings, client, writer=collector.spool, metrics=FlusherMetrics(registry))
    admin_token = settings.admin_token.get_secret_value()
    sql_client = (
        connect(settings.resolved_clickhouse_url, readonly_session=True,
                max_result_rows=settings.sql_max_result_rows)
        if admin_token else None
    )
    return [
        collector,
        flusher,
        Stitcher(settings, client, flusher=flusher, registry=registry),
        SqlEndpoint(sql_client, admin_token),
    ]


def serve_app(settings: Settings) -> Starlette:
    registry = CollectorRegistry()
    return create_app(serve_components(settings, registry), registry,
                      cors_allow_origins=settings.cors_allow_origins)


def run_uvicorn(app: Starlette, settings: Settings) -> None:
    """Serve with uvloop + httptools, no access log (it would dominate the hot path's cost)."""
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", http="httptools",
        access_log=False, log_level=settings.log_level, timeout_graceful_shutdown=30,
    )
    # TRICKY: uvicorn restores the previous handlers after its graceful shutdown and re-raises the
    # signal it caught, so with the default handlers a SIGTERM'd process dies by the signal
    # (exit -15) even though everything was flushed. A clean shutdown must exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: log.info("exiting after graceful shutdown (signal %d)", signum))
    uvicorn.Server(config).run()


def run_collector(settings: Settings) -> None:
    run_uvicorn(collector_app(settings), settings)


def run_serve(settings: Settings) -> None:
    run_uvicorn(serve_app(settings), settings)


def run_stitcher(settings: Settings) -> None:
    """`clickstream stitcher`: POST /stitch (+ health, readiness, metrics) against a ClickHouse server.

    Without a flusher in the process, attribution sees what the separate flusher has inserted.
    """
    registry = CollectorRegistry()
    client = open_configured(settings)
    stitcher = Stitcher(settings, client, flusher=None, registry=registry)
    # No CORS: /stitch is server to server.
    run_uvicorn(create_app([stitcher], registry, cors_allow_origins=()), settings)


def run_flusher(settings: Settings) -> None:
    """The flusher alone, for a collector on the same spool; /healthz, /readyz (ClickHouse reachable)
    and /metrics on CLICKSTREAM_HOST:CLICKSTREAM_PORT.

    SIGTERM / SIGINT: stop, flush every sealed segment, exit 0.
    """
    registry = CollectorRegistry()
    flusher = Flusher(settings, open_configured(settings), metrics=FlusherMetrics(registry))
    log.info("flusher on %s", settings.spool_dir)
    # No CORS: nothing here is for browsers.
    run_uvicorn(create_app([flusher], registry, cors_allow_origins=()), settings)
