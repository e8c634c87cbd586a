"""Build and run the processes behind the CLI: collector, flusher, serve (all in one), sql."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import uvicorn
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry, start_http_server
from starlette.applications import Starlette

from clickstream.settings import Settings
from clickstream.sqlapi import SqlEndpoint
from clickstream.web import create_app
from collector.app import Collector
from collector.metrics import CollectorMetrics
from flusher.clickhouse import check_guarantees, connect, describe, migrate
from flusher.loop import Flusher, FlusherMetrics

log = logging.getLogger(__name__)


def collector_app(settings: Settings) -> Starlette:
    """The collector alone: /collect, /beacon.js, /healthz, /readyz, /metrics."""
    registry = CollectorRegistry()
    collector = Collector(settings, CollectorMetrics(registry))
    return create_app([collector], registry, cors_allow_origins=settings.cors_allow_origins)


def open_clickhouse(settings: Settings) -> Client:
    """Connect, migrate, log the engine and check the settings exactly-once depends on.

    Raises RuntimeError when a dedup window is missing (retries would double count).
    """
    url = settings.resolved_clickhouse_url
    client = connect(url)
    applied = migrate(client, retention_days=settings.retention_days)
    log.info("ClickHouse: %s; migrations applied now: %s", describe(client, url), applied or "none")
    problems = check_guarantees(client)
    if problems:
        raise RuntimeError("; ".join(problems))
    return client


def serve_components(settings: Settings, registry: CollectorRegistry) -> list[Any]:
    """collector + flusher + stitcher + POST /sql in one process owning ClickHouse."""
    client = open_clickhouse(settings)
    collector = Collector(settings, CollectorMetrics(registry))
    flusher = Flusher(settings, client, writer=collector.spool, metrics=FlusherMetrics(registry))
    sql_client = (
        connect(settings.resolved_clickhouse_url, readonly_session=True,
                max_result_rows=settings.sql_max_result_rows)
        if settings.admin_token else None
    )
    components: list[Any] = [collector, flusher]
    try:
        from stitcher.service import Stitcher
    except ImportError:  # the stitcher package is optional until it is built
        pass
    else:
        components.append(Stitcher(settings, client, flusher=flusher, registry=registry))
    components.append(SqlEndpoint(sql_client, settings.admin_token))
    return components


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
    # (exit -15) even though everything was flushed. A clean shutdown must exit 0 (issue 3).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: log.info("exiting after graceful shutdown (signal %d)", signum))
    uvicorn.Server(config).run()


def run_collector(settings: Settings) -> None:
    run_uvicorn(collector_app(settings), settings)


def run_serve(settings: Settings) -> None:
    run_uvicorn(serve_app(settings), settings)


def run_flusher(settings: Settings) -> None:
    """The flusher alone, for a collector on the same machine; /metrics on CLICKSTREAM_PORT.

    SIGTERM / SIGINT: stop, flush every sealed segment, exit 0.
    """
    registry = CollectorRegistry()
    client = open_clickhouse(settings)
    flusher = Flusher(settings, client, metrics=FlusherMetrics(registry))
    start_http_server(settings.port, addr=settings.host, registry=registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    flusher.start()
    log.info("flusher running on %s", settings.spool_dir)
    while not stop.wait(1.0):
        flusher.update_gauges()
    flusher.stop()
