"""Build and run the processes behind the CLI: collector, flusher, stitcher, serve (all in one)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from clickstream import workers
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


def collector_app(settings: Settings) -> ASGIApp:
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


def serve_app(settings: Settings) -> ASGIApp:
    registry = CollectorRegistry()
    return create_app(serve_components(settings, registry), registry,
                      cors_allow_origins=settings.cors_allow_origins)


def run_uvicorn(app: ASGIApp, settings: Settings, *, sockets: list[socket.socket] | None = None,
                uds: Path | None = None) -> None:
    """Serve with uvloop + httptools, no access log (it would dominate the hot path's cost).

    On CLICKSTREAM_HOST:CLICKSTREAM_PORT, or on inherited `sockets` (a `serve --workers` worker),
    or on the Unix socket `uds` (the owner of `serve --workers`). X-Forwarded-For is read from the
    proxies in `forwarded_allow_ips` only (uvicorn's proxy headers): IP hashes and cookieless ids
    need the browser's address, not the proxy's."""
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, uds=str(uds) if uds else None, loop="uvloop",
        http="httptools", access_log=False, log_level=settings.log_level, timeout_graceful_shutdown=30,
        forwarded_allow_ips=settings.forwarded_allow_ips,  # the client IP behind a first-party proxy
    )
    # TRICKY: uvicorn restores the previous handlers after its graceful shutdown and re-raises the
    # signal it caught, so with the default handlers a SIGTERM'd process dies by the signal
    # (exit -15) even though everything was flushed. A clean shutdown must exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: log.info("exiting after graceful shutdown (signal %d)", signum))
    uvicorn.Server(config).run(sockets=sockets)


def run_collector(settings: Settings) -> None:
    run_uvicorn(collector_app(settings), settings)


def run_serve(settings: Settings) -> None:
    """`clickstream serve`: all in one process (CLICKSTREAM_WORKERS=0), or N collector processes on
    the port and this process owning ClickHouse (clickstream.workers)."""
    if settings.workers == 0:
        run_uvicorn(serve_app(settings), settings)
        return
    registry = CollectorRegistry()
    sock = workers.listen(settings)
    owner_socket = workers.owner_socket_path()
    client = open_configured(settings)
    pool = workers.Workers(settings, sock, owner_socket, registry)
    spools = workers.AllSpools(settings, client, pool, registry)
    admin_token = settings.admin_token.get_secret_value()
    sql_client = (connect(settings.resolved_clickhouse_url, readonly_session=True,
                          max_result_rows=settings.sql_max_result_rows) if admin_token else None)
    # started in this order, stopped in reverse: workers stop first (seal), the flushers last (drain)
    components: list[Component] = [spools, Stitcher(settings, client, flusher=spools, registry=registry),
                                   SqlEndpoint(sql_client, admin_token), pool]
    try:
        run_uvicorn(create_app(components, registry, cors_allow_origins=()), settings, uds=owner_socket)
    finally:
        owner_socket.unlink(missing_ok=True)


def run_worker(settings: Settings, fd: int, owner_socket: Path) -> None:
    """One collector process of `serve --workers`, on the inherited listening socket `fd`.

    SIGUSR1 seals the active spool segment (the owner's freshness flush); the process stops by
    itself when its owner is gone.
    """
    seal = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: seal.set())  # only sets an event: no lock taken here
    registry = CollectorRegistry()
    collector = Collector(settings, CollectorMetrics(registry))

    def sealer() -> None:
        while True:
            seal.wait()
            seal.clear()
            try:
                collector.spool.seal_active()
            except Exception:  # sealing again at age or stop; the owner's wait times out
                log.exception("worker: sealing on request failed")

    owner = os.getppid()

    def orphaned() -> None:
        while os.getppid() == owner:
            time.sleep(1.0)
        log.error("worker: the serve process is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=sealer, name="worker-sealer", daemon=True).start()
    threading.Thread(target=orphaned, name="worker-orphan", daemon=True).start()
    app = create_app([collector, workers.Forwarder(owner_socket)], registry,
                     cors_allow_origins=settings.cors_allow_origins)
    run_uvicorn(app, settings, sockets=[socket.socket(fileno=fd)])


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
