"""`clickstream serve --workers N`: N collector processes on one port, one process owning ClickHouse.

Layout (docs/architecture.md "Command line"):

- the **owner** (the process `serve` starts in) binds the port once and passes the listening
  socket to N **worker** processes (`clickstream worker`, a hidden command), each a collector with
  its own spool `<spool>/w<i>` and dead letters `<rejected>/w<i>`. The kernel hands each new
  connection to one worker's accept; the queue is shared, so a crashed worker loses only its own
  open connections, and the owner starts a new one on the same spool (its start recovers the spool:
  torn tails cut, open segments sealed);
- the owner opens ClickHouse (embedded chDB allows one process per directory) and runs one
  flusher per spool directory (all sharing one client-retry memory, flusher.dedup, and one set of
  metrics), the stitcher, served on a Unix socket, and the query port (ClickHouse's HTTP interface for
  dashboards, its own listener). Workers forward `/stitch` to it (`Forwarder`), and add the owner's
  checks to their `/readyz`;
- the stitcher's freshness flush (`AllSpools.flush_now`) asks every worker to seal its active
  segment (SIGUSR1), waits until the segments that were open are sealed, then flushes every spool:
  an event acknowledged by any worker before a stitch request counts for it;
- SIGTERM / SIGINT to the owner: workers get SIGTERM and drain their connections and seal their
  spools, then every flusher drains its spool into ClickHouse, then the owner exits 0. A worker
  whose owner died exits by itself.

`/metrics` on the port is the metrics of the worker that took the connection (collector counters
per worker process), plus nothing of the owner's: scrape the owner's socket for the flushers'.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clickstream.core.component import Check
from clickstream.core.errors import Unavailable
from clickstream.core.openapi import Operations
from clickstream.core.settings import Settings
from clickstream.core.spool import SpoolWriter, segment_created_us
from flusher.dedup import EventIdMemory
from flusher.loop import Flusher, FlusherMetrics
from flusher.pacing import interval_for
from stitcher.service import stitch_operations

log = logging.getLogger(__name__)

#: Routes of the owner that a worker forwards (server-to-server or admin: never the hot path).
FORWARDED = ("/stitch",)
_HOP_BY_HOP = frozenset({"host", "connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"})
_STOP_TIMEOUT_S = 60.0


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker `index`: its own spool and dead-letter directories."""
    return settings.model_copy(update={"spool_path": settings.spool_dir / f"w{index}",
                                       "rejected_path": settings.rejected_dir / f"w{index}"})


def listen(settings: Settings) -> socket.socket:
    """The port's listening socket, bound once by the owner and inherited by every worker."""
    sock = socket.create_server((settings.host, settings.port), backlog=2048, reuse_port=False,
                                family=socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.set_inheritable(True)
    return sock


def owner_socket_path() -> Path:
    """A Unix socket path for the owner's routes (short: a socket path has at most 107 bytes)."""
    return Path(tempfile.gettempdir()) / f"clickstream-{os.getpid()}-{secrets.token_hex(4)}.sock"


def _catches(pid: int, sig: int) -> bool:
    """True when process `pid` has a handler for `sig` (its SigCgt mask in /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError):
        return False
    return False


class Workers:
    """The owner's component that starts, watches and stops the N collector processes."""

    def __init__(self, settings: Settings, sock: socket.socket, owner_socket: Path,
                 registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.count = settings.workers
        self.sock = sock
        self.owner_socket = owner_socket
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.count
        self.restarts = Counter("clickstream_worker_restarts", "Collector worker processes restarted after they "
                                "exited on their own", registry=registry)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _env(self, index: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")}
        own = worker_settings(self.settings, index)
        for name in Settings.model_fields:
            value = getattr(own, name)
            if name in Settings.SECRETS or value is None:
                continue  # a collector needs no secret
            env["CLICKSTREAM_" + name.upper()] = own.env_text(name)
        env["CLICKSTREAM_WORKERS"] = "0"
        return env

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        fd = self.sock.fileno()
        command = [sys.executable, "-m", "clickstream.cli", "worker", "--fd", str(fd), "--index", str(index),
                   "--owner-socket", str(self.owner_socket)]
        # its own session: a terminal's Ctrl-C reaches the owner only, which stops the workers in order
        return subprocess.Popen(command, env=self._env(index), pass_fds=(fd,), start_new_session=True)

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self.procs if p is not None and p.poll() is None]

    def request_seal(self) -> None:
        """Ask every running worker to seal its active spool segment (SIGUSR1, see `run_worker`)."""
        for pid in self.pids():
            if _catches(pid, signal.SIGUSR1):  # a worker still starting has nothing open yet
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)

    # -- component -------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            for index in range(self.count):
                self.procs[index] = self._spawn(index)
        self._thread = threading.Thread(target=self._watch, name="workers", daemon=True)
        self._thread.start()
        log.info("serve: %d collector worker(s) on %s:%d", self.count, self.settings.host, self.settings.port)

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            with self._lock:
                for index, proc in enumerate(self.procs):
                    if proc is not None and proc.poll() is not None and not self._stopping.is_set():
                        log.error("serve: worker %d (pid %d) exited with %s; starting it again", index, proc.pid,
                                  proc.returncode)
                        self.restarts.inc()
                        self.procs[index] = self._spawn(index)

    def stop(self) -> None:
        """SIGTERM every worker (each finishes its requests and seals its spool), wait, kill late ones."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            procs = [p for p in self.procs if p is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("serve: worker pid %d did not stop in %.0f s; killed (its spool is kept)", proc.pid,
                          _STOP_TIMEOUT_S)
                proc.kill()
                proc.wait()
        self.sock.close()

    def routes(self) -> list[BaseRoute]:
        return []

    def readiness(self) -> list[Check]:
        alive = len(self.pids())
        return [Check("workers_running", alive == self.count, f"{alive}/{self.count}")]

    def update_gauges(self) -> None:
        pass


class AllSpools:
    """The owner's flushers: one per spool directory, one client-retry memory, one metrics set.

    Spool directories: `<spool>/w<i>` of every worker, plus any other `w*` directory and the top
    level `<spool>` left by an earlier run with more workers or none (recovered, then drained).
    """

    def __init__(self, settings: Settings, client: Client, workers: Workers, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.workers = workers
        self.registry = registry
        memory = EventIdMemory(settings.dedup_max_ids)
        memory.load(client)
        metrics = FlusherMetrics(registry)
        root = settings.spool_dir
        own = [worker_settings(settings, i) for i in range(workers.count)]
        owned = {s.spool_dir for s in own}
        others = [root, *sorted(p for p in root.glob("w*") if p.is_dir() and p not in owned)]
        for directory in others:
            _recover(directory)
        spools = own + [settings.model_copy(update={"spool_path": d}) for d in others]
        self.worker_dirs = [s.spool_dir for s in own]
        self.flushers = [Flusher(s, client, metrics=metrics, memory=memory) for s in spools]
        self._stopping = threading.Event()
        self._pacing: threading.Thread | None = None

    def flush_now(self) -> int:
        """Seal every worker's active segment, then flush every spool (the stitcher's freshness).

        Raises TimeoutError when a segment open at the call is not sealed within
        CLICKSTREAM_STITCH_FLUSH_TIMEOUT_S (a worker hung or restarting).
        """
        open_before = [p for d in self.worker_dirs for p in d.glob("*.open")]
        if open_before:
            self.workers.request_seal()
            deadline = time.monotonic() + self.settings.stitch_flush_timeout_s
            while any(p.exists() for p in open_before):
                if time.monotonic() > deadline:
                    raise TimeoutError("a collector worker did not seal its spool segment")
                time.sleep(0.002)
        return sum(f.flush_now() for f in self.flushers)

    def start(self) -> None:
        for flusher in self.flushers:
            flusher.start()
        self._pacing = threading.Thread(target=self._seal_paced, name="seal-pacer", daemon=True)
        self._pacing.start()

    def _seal_paced(self) -> None:
        """Ask the workers to seal once their oldest open segment is as old as the adaptive flush
        interval for the rate of all flushers together (flusher.pacing): the interval a single
        process gets by sealing its own segments."""
        while not self._stopping.wait(0.05):
            rate = sum(f.pacer.rate for f in self.flushers)
            interval_s = interval_for(rate, self.settings.flush_min_interval_ms, self.settings.flush_interval_ms) / 1000
            created = [segment_created_us(p.stem) for d in self.worker_dirs for p in d.glob("*.open")]
            if created and time.time() - min(created) / 1e6 >= interval_s:
                self.workers.request_seal()

    def stop(self) -> None:
        """Drain every spool, in parallel (each within Flusher.stop's deadline)."""
        self._stopping.set()
        with ThreadPoolExecutor(max_workers=len(self.flushers)) as pool:
            list(pool.map(lambda f: f.stop(), self.flushers))

    def routes(self) -> list[BaseRoute]:
        return []

    def readiness(self) -> list[Check]:
        return self.flushers[0].readiness()

    def update_gauges(self) -> None:
        lags = []
        for flusher in self.flushers:
            flusher.update_gauges()
            lags.append(self.registry.get_sample_value("clickstream_flusher_lag_seconds") or 0.0)
        self.flushers[0].metrics.lag.set(max(lags))


def _recover(directory: Path) -> None:
    """Seal what a collector that no longer runs left open in `directory` (cuts torn tails)."""
    if any(directory.glob("*.open")):
        SpoolWriter(directory).open().close()


class Forwarder:
    """A worker's component: `/stitch` answered by the owner, over its Unix socket."""

    def __init__(self, owner_socket: Path, paths: Sequence[str] = FORWARDED) -> None:
        self.owner_socket = owner_socket
        self.paths = paths
        self._client: httpx.AsyncClient | None = None

    async def _forward(self, request: Request) -> Response:
        if self._client is None:  # created on the event loop that uses it
            self._client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(self.owner_socket)),
                                             base_url="http://owner", timeout=None)
        headers = [(k, v) for k, v in request.headers.items() if k not in _HOP_BY_HOP]
        try:
            answer = await self._client.request(request.method, request.url.path, params=request.query_params,
                                                headers=headers, content=await request.body())
        except httpx.TransportError as exc:
            return Unavailable(f"the serve process that owns ClickHouse is not reachable ({type(exc).__name__})",
                               code="owner_unreachable").response()
        kept = {k: v for k, v in answer.headers.items() if k not in _HOP_BY_HOP and k != "content-encoding"}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    def routes(self) -> list[BaseRoute]:
        return [Route(path, self._forward, methods=["GET", "POST"]) for path in self.paths]

    def openapi(self) -> Operations:
        """The forwarded routes in the worker's /openapi.json (what the owner answers)."""
        return stitch_operations() if "/stitch" in self.paths else Operations({})

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def readiness(self) -> list[Check]:
        """The owner's checks (ClickHouse reachable, workers running), or `owner_reachable` false."""
        try:
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.owner_socket)), timeout=2) as client:
                checks: dict[str, Any] = client.get("http://owner/readyz").json()["checks"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return [Check("owner_reachable", False, type(exc).__name__)]
        return [Check(name, bool(c["ok"]), str(c.get("detail", ""))) for name, c in checks.items()]

    def update_gauges(self) -> None:
        pass
