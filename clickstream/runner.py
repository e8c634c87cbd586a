"""Build and run the processes behind the CLI: collector, flusher, stitcher, serve (all in one).

`serve` has two listeners in one process and one event loop: the main one (`/collect`, `/stitch`,
`/beacon.js`, health) on CLICKSTREAM_HOST:PORT, and the query port (ClickHouse's HTTP interface,
reports/query_port) on CLICKSTREAM_SQL_HOST:SQL_PORT when CLICKSTREAM_SQL_PASSWORD is set. On SIGTERM
or SIGINT both stop accepting at once; the components stop (in reverse order of start) only after
the query port's listener has finished its requests; then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn
import uvloop
from prometheus_client import CollectorRegistry, start_http_server
from starlette.applications import Starlette

from clickstream.core.clickhouse import open_clickhouse
from clickstream.core.component import Component
from clickstream.core.settings import Settings
from clickstream.web import create_app
from collector.app import Collector
from collector.metrics import CollectorMetrics
from flusher.loop import Flusher, FlusherMetrics
from reports.query_port import QueryPort, QueryPortConfig
from stitcher.service import Stitcher

log = logging.getLogger(__name__)


def collector_app(settings: Settings) -> Starlette:
    """The collector alone: /collect, /beacon.js, /healthz, /readyz, /metrics."""
    registry = CollectorRegistry()
    collector = Collector(settings, CollectorMetrics(registry))
    return create_app([collector], registry, cors_allow_origins=settings.cors_allow_origins)


def serve_components(settings: Settings, registry: CollectorRegistry) -> list[Component]:
    """collector + flusher + stitcher (+ the query port) in one process owning ClickHouse."""
    client = open_clickhouse(settings.resolved_clickhouse_url, retention_days=settings.retention_days)
    collector = Collector(settings, CollectorMetrics(registry))
    flusher = Flusher(settings, client, writer=collector.spool, metrics=FlusherMetrics(registry))
    components: list[Component] = [collector, flusher, Stitcher(settings, client, flusher=flusher, registry=registry)]
    port = query_port(settings, registry)
    if port is not None:
        components.append(port)  # started last, stopped first: before the flusher drains
    return components


def query_port(settings: Settings, registry: CollectorRegistry) -> QueryPort | None:
    """The query port on the embedded engine, or None when CLICKSTREAM_SQL_PASSWORD is unset. With a
    ClickHouse server URL there is none either: dashboards connect to that server itself."""
    config = QueryPortConfig.from_settings(settings)
    if config is None:
        return None
    url = settings.resolved_clickhouse_url
    if not url.startswith("chdb://"):
        log.warning("CLICKSTREAM_SQL_PASSWORD is set but ClickHouse is a server (%s): connect dashboards to "
                    "it; the query port serves only the embedded engine", url.split("@")[-1])
        return None
    return QueryPort(config, Path(url.removeprefix("chdb://")), registry)


class _Listener(uvicorn.Server):
    """A uvicorn server that leaves signals to `run_uvicorn`, which stops every listener of the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ListenerError(RuntimeError):
    """An address to listen on cannot be bound (in use, not this machine's): nothing was started."""


def bind(host: str, port: int, variables: str) -> socket.socket:
    """A listening TCP socket on host:port, bound before anything starts so that a taken address
    fails at once with the settings' names (`variables`), not after the components started.
    Raises ListenerError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on {host}:{port} ({variables}): {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


Listener = tuple[uvicorn.Server, socket.socket]


def run_uvicorn(app: Starlette, settings: Settings, extra: Sequence[Listener] = (),
                extra_closed: asyncio.Event | None = None) -> None:
    """Serve `app` on CLICKSTREAM_HOST:PORT and, once its start (lifespan) completed, the `extra`
    listeners on their sockets, in one uvloop event loop with httptools and no access log (it would
    dominate the hot path's cost). SIGTERM / SIGINT stop every listener at once (a second SIGINT
    forces); `extra_closed` is set when the extra listeners have finished. Returns when all have
    stopped. Raises ListenerError when CLICKSTREAM_HOST:PORT cannot be bound.

    TRICKY: uvicorn's own signal handling re-raises the caught signal after its graceful shutdown,
    so a SIGTERM'd process would die by the signal (exit -15) although everything was flushed; the
    handlers here only ask the servers to exit, and a clean shutdown exits 0.
    """
    main_socket = bind(settings.host, settings.port, "CLICKSTREAM_HOST, CLICKSTREAM_PORT")
    config = uvicorn.Config(app, host=settings.host, port=settings.port, http="httptools", access_log=False,
                            log_level=settings.log_level, timeout_graceful_shutdown=30)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve((_Listener(config), main_socket), list(extra), extra_closed or asyncio.Event()))


async def _serve(main: Listener, extra: list[Listener], extra_closed: asyncio.Event) -> None:
    servers = [main[0], *(server for server, _ in extra)]

    def stop(sig: signal.Signals) -> None:
        log.info("%s: stopping every listener", sig.name)
        for server in servers:
            if server.should_exit and sig == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    main_server = main[0]
    main_task = asyncio.create_task(main_server.serve(sockets=[main[1]]))
    try:
        while not main_server.started and not main_task.done():
            await asyncio.sleep(0.05)
        if main_server.started and extra:
            results = await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in extra),
                                           return_exceptions=True)
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:
                log.error("a listener failed (%r): stopping", failed[0])
                main_server.should_exit = True
    finally:
        extra_closed.set()
    await main_task


def run_collector(settings: Settings) -> None:
    run_uvicorn(collector_app(settings), settings)


def run_serve(settings: Settings) -> None:
    """`clickstream serve`: every component on the main listener, the query port on its own. Raises
    ListenerError (before anything starts) when an address is taken."""
    port_socket = None
    if QueryPortConfig.from_settings(settings) is not None and settings.resolved_clickhouse_url.startswith("chdb://"):
        port_socket = bind(settings.sql_host, settings.sql_port, "CLICKSTREAM_SQL_HOST, CLICKSTREAM_SQL_PORT")
    registry = CollectorRegistry()
    components = serve_components(settings, registry)
    listeners_closed = asyncio.Event()
    app = create_app(components, registry, cors_allow_origins=settings.cors_allow_origins,
                     before_stop=listeners_closed.wait)
    extra = [(_Listener(uvicorn.Config(port.listener_app(), host=port.config.host, port=port.config.port,
                                       http="httptools", lifespan="off", access_log=False,
                                       log_level=settings.log_level, timeout_graceful_shutdown=30)), port_socket)
             for port in components if isinstance(port, QueryPort) and port_socket is not None]
    run_uvicorn(app, settings, extra, listeners_closed)


def run_stitcher(settings: Settings) -> None:
    """`clickstream stitcher`: POST /stitch (+ health, readiness, metrics) against a ClickHouse server.

    Without a flusher in the process, attribution sees what the separate flusher has inserted.
    """
    registry = CollectorRegistry()
    client = open_clickhouse(settings.resolved_clickhouse_url, retention_days=settings.retention_days)
    stitcher = Stitcher(settings, client, flusher=None, registry=registry)
    # No CORS: /stitch is server to server.
    run_uvicorn(create_app([stitcher], registry, cors_allow_origins=()), settings)


def run_flusher(settings: Settings) -> None:
    """The flusher alone, for a collector on the same machine; /metrics on CLICKSTREAM_PORT.

    SIGTERM / SIGINT: stop, flush every sealed segment, exit 0.
    """
    registry = CollectorRegistry()
    client = open_clickhouse(settings.resolved_clickhouse_url, retention_days=settings.retention_days)
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
