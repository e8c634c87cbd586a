"""Build and run the processes behind the CLI: collector, flusher, stitcher, serve, worker.

`serve` has two listeners in one process and one event loop: the main one (`/collect`, `/stitch`,
`/beacon.js`, health; a Unix socket for its workers with `--workers N`) and the query port
(ClickHouse's HTTP interface, reports/query_port) on CLICKSTREAM_SQL_HOST:SQL_PORT when
CLICKSTREAM_SQL_PASSWORD is set. On SIGTERM or SIGINT both stop accepting at once; the components
stop (in reverse order of start) only after the query port's listener has finished its requests;
then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn
import uvloop
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from clickstream import workers
from clickstream.core.clickhouse import connect, is_embedded
from clickstream.core.cluster import open_configured
from clickstream.core.component import Component
from clickstream.core.http import guarded_protocol
from clickstream.core.settings import Settings
from clickstream.web import create_app
from collector.app import Collector
from collector.metrics import CollectorMetrics
from flusher.loop import Flusher, FlusherMetrics
from reports.dashboard import Dashboard, DashboardConfig
from reports.fold import Folder
from reports.query_port import QueryPort, QueryPortConfig
from stitcher.service import Stitcher

log = logging.getLogger(__name__)


def collector_app(settings: Settings, registry: CollectorRegistry | None = None) -> ASGIApp:
    """The collector alone: /collect, /beacon.js, /healthz, /readyz, /metrics."""
    registry = registry or CollectorRegistry()
    collector = Collector(settings, CollectorMetrics(registry))
    return create_app([collector], registry, cors_allow_origins=settings.cors_origins)


def serve_components(settings: Settings, registry: CollectorRegistry) -> list[Component]:
    """collector + flusher + stitcher (+ the query port) in one process owning ClickHouse."""
    client = open_configured(settings)
    collector = Collector(settings, CollectorMetrics(registry))
    flusher = Flusher(settings, client, writer=collector.spool, metrics=FlusherMetrics(registry))
    components: list[Component] = [collector, *folders(settings), flusher,
                                   Stitcher(settings, client, flusher=flusher, registry=registry)]
    port = query_port(settings, registry)
    if port is not None:
        components.append(port)  # started last, stopped first: before the flusher drains
    return components


#: The Linux nice value of the fold's query threads on the embedded engine (ClickHouse's
#: `os_thread_priority`): the roll-ups yield the cores to the collector, the flusher and its inserts,
#: and take what is idle. A no-op where the process lacks CAP_SYS_NICE (then the fold runs at the same
#: priority as the rest). On a ClickHouse server, set it in the settings profile of the user, if wanted.
FOLD_NICE = 19


def folders(settings: Settings) -> list[Component]:
    """The fold (reports/fold.py) of the process that owns ClickHouse, on a ClickHouse client of its
    own (opened here on the migrated database, closed at its stop), so its statements never hold up
    the flusher's inserts; none on a cluster (the roll-ups would need a fold per shard). Placed before
    the flushers, it stops after them: the events drained at the stop are folded."""
    if settings.clickhouse_cluster:
        log.warning("CLICKSTREAM_CLICKHOUSE_CLUSTER is set: the fold does not run on a cluster, the roll-up views "
                    "stay empty (reports/fold.py)")
        return []
    client = connect(settings.resolved_clickhouse_url)
    if is_embedded(client):  # on a server, its profile decides (a constraint there would fail every fold)
        client.set_client_setting("os_thread_priority", FOLD_NICE)
    return [Folder(client, settings.fold_interval_s, close_client=True)]


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


def uvicorn_log_level(settings: Settings) -> str:
    """uvicorn's log level: CLICKSTREAM_LOG_LEVEL, but never `trace`, where uvicorn logs every
    connection and ASGI message with the client's address (the raw IP is never stored or logged,
    docs/architecture.md "Telemetry event")."""
    level = settings.log_level.lower()
    return "debug" if level == "trace" else level


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


class _Listener(uvicorn.Server):
    """A uvicorn server that leaves signals to `run_uvicorn`, which stops every listener of the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


#: An extra listener of the process and the socket it serves.
Listener = tuple[uvicorn.Server, socket.socket]


def run_uvicorn(app: ASGIApp, settings: Settings, *, sockets: list[socket.socket] | None = None,
                uds: Path | None = None, extra: Sequence[Listener] = (),
                extra_closed: asyncio.Event | None = None, registry: CollectorRegistry | None = None) -> None:
    """Serve `app` with uvloop + httptools, no access log (it would dominate the hot path's cost).

    On CLICKSTREAM_HOST:CLICKSTREAM_PORT (bound first: ListenerError when taken), or on inherited
    `sockets` (a `serve --workers` worker), or on the Unix socket `uds` (the owner of `serve
    --workers`); then, once the app's start (lifespan) completed, the `extra` listeners on their
    sockets, in the same event loop. X-Forwarded-For is read from the proxies in
    `forwarded_allow_ips` only (uvicorn's proxy headers): IP hashes and cookieless ids need the
    browser's address, not the proxy's. Slow clients are closed (clickstream.core.http.guarded_protocol:
    CLICKSTREAM_HTTP_HEADER_TIMEOUT_S, _BODY_TIMEOUT_S), counted in `registry`. SIGTERM / SIGINT stop
    every listener at once (a second SIGINT forces); `extra_closed` is set when the extra listeners have finished.

    TRICKY: uvicorn's own signal handling re-raises the caught signal after its graceful shutdown,
    so a SIGTERM'd process would die by the signal (exit -15) although everything was flushed; the
    handlers here only ask the servers to exit, and a clean shutdown returns (exit 0).
    """
    if sockets is None and uds is None:
        sockets = [bind(settings.host, settings.port, "CLICKSTREAM_HOST, CLICKSTREAM_PORT")]
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, uds=str(uds) if uds else None,
        http=guarded_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s, registry),
        backlog=settings.http_backlog, access_log=False, log_level=uvicorn_log_level(settings),
        timeout_graceful_shutdown=30,
        forwarded_allow_ips=settings.forwarded_allow_ips,  # the client IP behind a first-party proxy
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(_Listener(config), sockets, list(extra), extra_closed or asyncio.Event()))


async def _serve(main: uvicorn.Server, sockets: list[socket.socket] | None, extra: list[Listener],
                 extra_closed: asyncio.Event) -> None:
    servers = [main, *(server for server, _ in extra)]

    def stop(sig: signal.Signals) -> None:
        log.info("%s: stopping every listener", sig.name)
        for server in servers:
            if server.should_exit and sig == signal.SIGINT:
                server.force_exit = True
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    main_task = asyncio.create_task(main.serve(sockets=sockets))
    try:
        while not main.started and not main_task.done():
            await asyncio.sleep(0.05)
        if main.started and extra:
            results = await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in extra),
                                           return_exceptions=True)
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:
                log.error("a listener failed (%r): stopping", failed[0])
                main.should_exit = True
    finally:
        extra_closed.set()
    await main_task


def _port_listeners(settings: Settings, components: Sequence[Component], sock: socket.socket | None) -> list[Listener]:
    """The query port's listener, with the dashboard (`GET /dashboard`, reports/dashboard), for the
    QueryPort among `components` (none without one)."""
    http = guarded_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s)
    return [(_Listener(uvicorn.Config(port.listener_app(Dashboard(port, dashboard_config(settings)).routes()),
                                      host=port.config.host, port=port.config.port,
                                      http=http, lifespan="off", access_log=False,
                                      log_level=uvicorn_log_level(settings), timeout_graceful_shutdown=30)), sock)
            for port in components if isinstance(port, QueryPort) and sock is not None]


def dashboard_config(settings: Settings) -> DashboardConfig:
    """The dashboard's view of the collector: where beacon.js is served (the empty state's script tag;
    a wildcard bind address is shown as 127.0.0.1, to be replaced by the site's public host)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    host = f"[{host}]" if ":" in host else host
    return DashboardConfig(script_url=f"http://{host}:{settings.port}{settings.script_path}")


def _bind_query_port(settings: Settings) -> socket.socket | None:
    """The query port's socket, bound before anything starts, when the port is on."""
    if QueryPortConfig.from_settings(settings) is None or not settings.resolved_clickhouse_url.startswith("chdb://"):
        return None
    return bind(settings.sql_host, settings.sql_port, "CLICKSTREAM_SQL_HOST, CLICKSTREAM_SQL_PORT")


def run_collector(settings: Settings) -> None:
    registry = CollectorRegistry()
    run_uvicorn(collector_app(settings, registry), settings, registry=registry)


def run_serve(settings: Settings) -> None:
    """`clickstream serve`: all in one process (CLICKSTREAM_WORKERS=0), or N collector processes on
    the port and this process owning ClickHouse (clickstream.workers); the query port on its own
    listener in the process that owns ClickHouse. Raises ListenerError (before anything starts) when
    an address is taken."""
    port_socket = _bind_query_port(settings)
    listeners_closed = asyncio.Event()
    registry = CollectorRegistry()
    if settings.workers == 0:
        sockets = [bind(settings.host, settings.port, "CLICKSTREAM_HOST, CLICKSTREAM_PORT")]
        components = serve_components(settings, registry)
        app = create_app(components, registry, cors_allow_origins=settings.cors_origins,
                         before_stop=listeners_closed.wait)
        run_uvicorn(app, settings, sockets=sockets, extra=_port_listeners(settings, components, port_socket),
                    extra_closed=listeners_closed, registry=registry)
        return
    sock = workers.listen(settings)
    owner_socket = workers.owner_socket_path()
    client = open_configured(settings)
    pool = workers.Workers(settings, sock, owner_socket, registry)
    spools = workers.AllSpools(settings, client, pool, registry)
    # started in this order, stopped in reverse: workers stop first (seal), the query port, the flushers
    # (drain), the fold last (folds what was drained)
    owned: list[Component] = [*folders(settings), spools,
                              Stitcher(settings, client, flusher=spools, registry=registry)]
    port = query_port(settings, registry)
    owned += [port] if port is not None else []
    owned.append(pool)
    try:
        run_uvicorn(create_app(owned, registry, cors_allow_origins=(), before_stop=listeners_closed.wait),
                    settings, uds=owner_socket, extra=_port_listeners(settings, owned, port_socket),
                    extra_closed=listeners_closed, registry=registry)
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
                     cors_allow_origins=settings.cors_origins)
    run_uvicorn(app, settings, sockets=[socket.socket(fileno=fd)], registry=registry)


def run_stitcher(settings: Settings) -> None:
    """`clickstream stitcher`: POST /stitch (+ health, readiness, metrics) against a ClickHouse server.

    Without a flusher in the process, attribution sees what the separate flusher has inserted.
    """
    registry = CollectorRegistry()
    client = open_configured(settings)
    stitcher = Stitcher(settings, client, flusher=None, registry=registry)
    # No CORS: /stitch is server to server.
    run_uvicorn(create_app([stitcher], registry, cors_allow_origins=()), settings, registry=registry)


def run_flusher(settings: Settings) -> None:
    """The flusher alone, for a collector on the same spool; /healthz, /readyz (ClickHouse reachable)
    and /metrics on CLICKSTREAM_HOST:CLICKSTREAM_PORT.

    SIGTERM / SIGINT: stop, flush every sealed segment, exit 0.
    """
    registry = CollectorRegistry()
    client = open_configured(settings)
    flusher = Flusher(settings, client, metrics=FlusherMetrics(registry))
    log.info("flusher on %s", settings.spool_dir)
    # No CORS: nothing here is for browsers. The fold stops after the flusher drained.
    run_uvicorn(create_app([*folders(settings), flusher], registry, cors_allow_origins=()), settings,
                registry=registry)
