"""The query port as a component of `serve`: its own listener, one request pipeline, metrics.

    authenticate -> read (URL, multipart form, compressed body) -> Job (policy, session)
    -> admit (slot or queue, else 503) -> worker thread: QueryEngine.execute -> response

The component's routes are served by a second uvicorn listener (`listener_app()`, composed by
clickstream/runner.py), never by the collector's app: the query port stays on an internal address
while `/collect` faces the internet. `routes()` is therefore empty.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clickstream.core.component import Check
from reports.query_port.config import QueryPortConfig
from reports.query_port.engine import Job, Outcome, QueryEngine, summary
from reports.query_port.errors import AUTHENTICATION_FAILED, STD_EXCEPTION, QueryPortError, error
from reports.query_port.limits import Admission, busy
from reports.query_port.logins import COOKIE_NAME, Logins, has_credentials
from reports.query_port.request import authenticate, build_job, form_fields, read_body
from reports.query_port.sessions import Session, Sessions

_OK = b"Ok.\n"
_TEXT = "text/plain; charset=UTF-8"
#: How often a running query checks whether its client is still there (s).
_DISCONNECT_POLL_S = 0.2


class QueryPort:
    """ClickHouse's HTTP interface on the embedded engine at `data_path`, read only and bounded.

    `start()` opens the engine's catalog (after the flusher opened and migrated the directory);
    `stop()` cancels running queries (KILL QUERY), waits for the port's threads and releases the
    engine. Counters go to `registry` (Prometheus) and `stats()`. Raises ValueError without a password.
    """

    def __init__(self, config: QueryPortConfig, data_path: str | os.PathLike[str],
                 registry: CollectorRegistry | None = None) -> None:
        if not config.password:
            raise ValueError("the query port needs a password (CLICKSTREAM_SQL_PASSWORD)")
        self.config = config
        self.engine = QueryEngine(config, data_path)
        self.sessions = Sessions(config)
        self.admission = Admission(config)
        #: Browser logins of the dashboard's form (reports/dashboard): the cookie stands for the credentials.
        self.logins = Logins()
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False
        self.counters: dict[str, int] = {"queries": 0, "errors": 0, "auth_failures": 0, "cancelled": 0}
        if registry is not None:
            registry.register(_PortCollector(self))

    # -- Component ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the engine and the port's worker threads (as many as the concurrency cap: queries
        never run on the default executor the rest of `serve` uses). Raises RuntimeError."""
        self.engine.open()
        self._executor = ThreadPoolExecutor(self.config.max_concurrent_queries, thread_name_prefix="query-port")
        self._stopping = False

    def stop(self) -> None:
        """Refuse new queries, cancel the running ones, wait for their threads, forget the sessions,
        release the engine. Idempotent."""
        self._stopping = True
        for job in self.admission.running():
            self.engine.kill(job.marker)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.sessions.clear()
        self.engine.close()

    def routes(self) -> list[BaseRoute]:
        """None on the main listener: see `listener_app()`."""
        return []

    def readiness(self) -> list[Check]:
        ok = self.engine.is_open and not self._stopping
        return [Check("query_port", ok, f"{self.config.host}:{self.config.port}" if ok else "stopped")]

    def update_gauges(self) -> None:
        """Nothing to refresh: the registry reads `stats()` at scrape time."""

    def stats(self) -> dict[str, int]:
        """queries, errors, auth_failures, cancelled, rejected_busy (counters); running, sessions (now)."""
        return {**self.counters, "rejected_busy": self.admission.rejected_busy,
                "running": len(self.admission.running()), "sessions": len(self.sessions)}

    # -- HTTP ----------------------------------------------------------------------------------------

    def listener_app(self, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
        """The app of the port's own listener: `GET/POST /` (queries), `GET /ping` and
        `/replicas_status` (health, no credentials, as ClickHouse), then `extra_routes` (the
        dashboard, composed by clickstream/runner.py). No lifespan: `serve` starts and stops the
        component with the others."""
        return Starlette(routes=[
            Route("/", self._handle, methods=["GET", "HEAD", "POST"]),
            Route("/ping", self._ping, methods=["GET"]),
            Route("/replicas_status", self._ping, methods=["GET"]),
            *extra_routes,
        ])

    def authenticated(self, request: Request) -> bool:
        """Whether `request` carries the port's credentials (HTTP Basic, X-ClickHouse-User/-Key,
        `user`/`password` parameters) or, without any of those, a live login cookie. Counts failures."""
        try:
            self._authenticate(request, list(request.query_params.multi_items()))
        except QueryPortError:
            return False
        return True

    async def query(self, sql: str, params: Mapping[str, str] | None = None, fmt: str = "JSONCompact") -> bytes:
        """Run one read query for code of this process (the dashboard's JSON endpoints) with the port's
        guard, caps and query slots; `params` are query parameters in wire form. The body in `fmt`.
        Raises QueryPortError."""
        if self._stopping or self._executor is None:
            raise busy(self.config, "The query port is shutting down")
        job = Job(text=sql, params=dict(params or {}), default_format=fmt, database=self.config.database)

        async def never() -> bool:
            return False

        outcome = await self._admit_and_run(never, job)
        return outcome.body

    async def _ping(self, request: Request) -> Response:
        return Response(_OK, media_type=_TEXT)

    async def _handle(self, request: Request) -> Response:
        query_id = (request.query_params.get("query_id") or request.headers.get("x-clickhouse-query-id")
                    or str(uuid.uuid4()))
        if request.method in ("GET", "HEAD") and "query" not in request.query_params:
            return Response(_OK, media_type=_TEXT)
        session: Session | None = None
        close_session = False
        try:
            params = list(request.query_params.multi_items())
            self._authenticate(request, params)
            if self._stopping or self._executor is None:
                raise busy(self.config, "The query port is shutting down")
            body = b""
            content_type = request.headers.get("content-type", "")
            multipart = content_type.startswith("multipart/form-data")
            if request.method == "POST":
                body = await read_body(request, self.config.max_body_bytes)
                if multipart:
                    params += form_fields(content_type, body)
                    body = b""
            job, session, close_session = build_job(self.engine, self.sessions, request.headers, params, body,
                                                    query_id, multipart)
            outcome = await self._admit_and_run(request.is_disconnected, job)
        except QueryPortError as exc:
            return self._error_response(exc, query_id)
        except ClientDisconnect:
            return Response(b"", status_code=499)
        except Exception as exc:  # any other failure still gets ClickHouse's error shape
            return self._error_response(error(STD_EXCEPTION, f"{type(exc).__name__}: {exc}"), query_id)
        finally:
            if session is not None:
                self.sessions.release(session, close_session)
        return self._response(outcome, query_id)

    def _authenticate(self, request: Request, params: list[tuple[str, str]]) -> None:
        headers = request.headers
        named = has_credentials(bool(headers.get("authorization") or headers.get("x-clickhouse-user")
                                     or headers.get("x-clickhouse-key")), params)
        if not named and self.logins.valid(request.cookies.get(COOKIE_NAME)):
            return
        try:
            authenticate(headers, params, self.config)
        except QueryPortError as exc:
            if exc.code == AUTHENTICATION_FAILED:
                self.counters["auth_failures"] += 1
            raise

    async def _admit_and_run(self, is_disconnected: Callable[[], Awaitable[bool]], job: Job) -> Outcome:
        """Take a query slot (or 503); run in the port's threads; cancel the query (KILL QUERY)
        when the client goes away, which frees its slot at once."""
        await self.admission.acquire(is_disconnected)
        try:
            self.admission.register(job)
            try:
                executor = self._executor
                if executor is None:
                    raise busy(self.config, "The query port is shutting down")
                loop = asyncio.get_running_loop()
                future = loop.run_in_executor(executor, self.engine.execute, job)
                while not (await asyncio.wait({future}, timeout=_DISCONNECT_POLL_S))[0]:
                    if not job.cancelled and await is_disconnected():
                        job.cancelled = True
                        self.counters["cancelled"] += 1
                        await asyncio.to_thread(self.engine.kill, job.marker)
                self.counters["queries"] += 1
                return future.result()
            finally:
                self.admission.unregister(job)
        finally:
            self.admission.release()

    # -- responses -------------------------------------------------------------------------------------

    def _base_headers(self, query_id: str) -> dict[str, str]:
        return {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Server-Display-Name": self.engine.display_name}

    def _response(self, outcome: Outcome, query_id: str) -> Response:
        headers = self._base_headers(query_id)
        headers["X-ClickHouse-Format"] = outcome.format
        headers["X-ClickHouse-Timezone"] = outcome.timezone
        headers["X-ClickHouse-Summary"] = orjson.dumps(outcome.summary).decode()
        if outcome.content_encoding:
            headers["Content-Encoding"] = outcome.content_encoding
        return Response(outcome.body, headers=headers, media_type=outcome.content_type)

    def _error_response(self, exc: QueryPortError, query_id: str) -> Response:
        """`Code: N. DB::Exception: …` with ClickHouse's status for N and X-ClickHouse-Exception-Code;
        never compressed."""
        self.counters["errors"] += 1
        headers = self._base_headers(query_id)
        headers["X-ClickHouse-Exception-Code"] = str(exc.code)
        headers["X-ClickHouse-Summary"] = orjson.dumps(summary()).decode()
        headers.update(exc.headers)
        return Response(exc.body(self.engine.version or "unknown").encode(),
                        status_code=exc.status or self.engine.status_for(exc.code), headers=headers,
                        media_type=_TEXT)


class _PortCollector(Collector):
    """`clickstream_sql_*` metrics, read from QueryPort.stats() at scrape time."""

    def __init__(self, port: QueryPort) -> None:
        self.port = port

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.port.stats()
        for name, help_text in (("queries", "Queries answered by the query port"),
                                ("errors", "Requests answered with a ClickHouse error"),
                                ("auth_failures", "Requests with wrong or missing credentials"),
                                ("cancelled", "Queries killed because their client went away"),
                                ("rejected_busy", "Queries refused with 503: every slot taken past the queue wait")):
            yield CounterMetricFamily(f"clickstream_sql_{name}", help_text, value=stats[name])
        yield GaugeMetricFamily("clickstream_sql_running", "Queries in the engine now", value=stats["running"])
        yield GaugeMetricFamily("clickstream_sql_sessions", "Open HTTP sessions (session_id)", value=stats["sessions"])
