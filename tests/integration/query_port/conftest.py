"""Fixtures of the query port tests.

In-process (`port`, `start_port`, `writer`): one embedded engine for this package's tests (chDB hosts
one engine path per process; every connection is closed when the package ends, so other modules can
open theirs), opened first by the writer as the flusher opens it (clickhouse-connect's chdb client),
with a small deterministic data set of many column types, and query ports served by real uvicorn
servers on free ports in threads of this process (they must share the engine with the writer).

Against a real `clickstream serve` (`served`): a subprocess on free ports, the load model's traffic
driven through /collect and /stitch, flushed; `Truth` is the independent computation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
import uvicorn
from clickhouse_connect.driver.client import Client

from load.audit import wait_for_flush
from load.driver import Ledger, drive
from load.model import ModelConfig, Truth, generate
from reports.query import port_rows_query
from reports.query_port import QueryPort, QueryPortConfig
from tests.conftest import Server, free_port, start_server, wait_for

PASSWORD = "s3cret-pw"
USER = "dashboards"
SITES = ("example.com", "shop.example.com")
CHANNELS = ("direct", "organic", "paid", "email")
PATHS = ("/", "/pricing", "/blog/a", "/blog/b", "/signup")
N_EVENTS = 2_000
T0 = datetime(2025, 3, 1, tzinfo=UTC)

SCHEMA = [
    "CREATE DATABASE IF NOT EXISTS clickstream",
    """CREATE TABLE IF NOT EXISTS clickstream.events (
        event_id UUID, site_id LowCardinality(String), ts DateTime64(3, 'UTC'), session_id String,
        path String, channel LowCardinality(String), duration_ms UInt32, revenue Decimal(18, 2),
        props Map(String, String), tags Array(String), referrer Nullable(String)
    ) ENGINE = MergeTree ORDER BY (site_id, ts)""",
    """CREATE VIEW IF NOT EXISTS clickstream.v_daily AS
        SELECT site_id, toDate(ts) AS day, count() AS pageviews, uniqExact(session_id) AS sessions
        FROM clickstream.events GROUP BY site_id, day""",
    """CREATE VIEW IF NOT EXISTS clickstream.v_channels AS
        SELECT site_id, channel, count() AS events, sum(revenue) AS revenue
        FROM clickstream.events GROUP BY site_id, channel""",
    # A parameterized view (ClickHouse 23.1+): SELECT * FROM v_site_range(site = 'x', ...)
    """CREATE VIEW IF NOT EXISTS clickstream.v_site_range AS
        SELECT path, count() AS hits FROM clickstream.events
        WHERE site_id = {site:String} AND ts >= {start:DateTime64(3, 'UTC')} AND ts < {stop:DateTime64(3, 'UTC')}
        GROUP BY path""",
    "CREATE TABLE IF NOT EXISTS clickstream.ingest (n UInt64, payload String) ENGINE = MergeTree ORDER BY n",
]


def make_events(n: int = N_EVENTS, seed: int = 9) -> list[dict[str, Any]]:
    """Deterministic events; the tests compute expected answers from these, not through the port."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        ts = T0 + timedelta(seconds=rng.randrange(0, 7 * 86400), milliseconds=rng.randrange(1000))
        events.append({
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "site_id": rng.choice(SITES),
            "ts": ts.strftime("%Y-%m-%d %H:%M:%S.") + f"{ts.microsecond // 1000:03d}",
            "session_id": f"s{rng.randrange(300)}",
            "path": rng.choice(PATHS),
            "channel": rng.choice(CHANNELS),
            "duration_ms": rng.randrange(0, 60_000),
            "revenue": f"{rng.randrange(0, 10000) / 100:.2f}",
            "props": {"plan": rng.choice(("free", "pro"))} if i % 3 else {},
            "tags": [f"t{j}" for j in range(i % 3)],
            "referrer": None if i % 4 else f"https://ref{i % 7}.example/",
        })
    return events


@pytest.fixture(scope="package")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("query-port") / "clickhouse"


@pytest.fixture(scope="package")
def events() -> list[dict[str, Any]]:
    return make_events()


@pytest.fixture(scope="package")
def writer(engine_dir: Path, events: list[dict[str, Any]]) -> Iterator[Client]:
    """The flusher's kind of client: clickhouse-connect on chdb:///dir, inserting JSONEachRow with
    async_insert=0, as clickstream/core/clickhouse.py does."""
    engine_dir.mkdir(parents=True, exist_ok=True)
    client = clickhouse_connect.get_client(dsn=f"chdb://{engine_dir}")
    for statement in SCHEMA:
        client.command(statement)
    body = "\n".join(json.dumps(e) for e in events).encode()
    client.raw_insert("clickstream.events", None, body, fmt="JSONEachRow",
                      settings={"async_insert": 0, "insert_deduplicate": 1})
    yield client
    client.close()


@dataclass
class Port:
    qp: QueryPort
    config: QueryPortConfig
    url: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread


@pytest.fixture(scope="package")
def start_port(engine_dir: Path, writer: Client) -> Iterator[Callable[..., Port]]:
    """Factory: a started QueryPort (config overrides as keyword arguments) behind uvicorn in a thread."""
    ports: list[Port] = []

    def start(**overrides: Any) -> Port:
        config = replace(QueryPortConfig(password=PASSWORD, queue_max_wait_ms=0), **overrides)
        qp = QueryPort(config, engine_dir)
        qp.start()
        number = free_port()
        server = uvicorn.Server(uvicorn.Config(qp.listener_app(), host="127.0.0.1", port=number,
                                               log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        handle = Port(qp, config, f"http://127.0.0.1:{number}", number, server, thread)
        ports.append(handle)
        return handle

    yield start
    for handle in ports:
        handle.server.should_exit = True
        handle.thread.join(timeout=10)
        handle.qp.stop()


#: A query that runs until its max_execution_time (or until it is killed).
HEAVY = "SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) % 7 = 1"


@contextlib.contextmanager
def held_slot(host: str, port: int, password: str, running: Callable[[], float], params: str = "") -> Iterator[None]:
    """A heavy query holding one query slot while the block runs (sent on a raw socket, `params` as URL
    parameters, max_execution_time=25 s); at exit the socket closes, the port kills the query, and
    the block's end waits until `running()` (queries in the engine) is back to what it was."""
    before = running()
    holder = socket.create_connection((host, port))
    auth = base64.b64encode(f"{USER}:{password}".encode())
    body = HEAVY.encode()
    holder.sendall(b"POST /?max_execution_time=25" + (b"&" + params.encode() if params else b"")
                   + b" HTTP/1.1\r\nHost: query-port\r\nAuthorization: Basic " + auth
                   + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        wait_for(lambda: running() > before, 30, "the heavy query to hold a slot")
        yield
    finally:
        holder.close()
        wait_for(lambda: running() <= before, 30, "the held slot to be freed")


@pytest.fixture(scope="package")
def port(start_port: Callable[..., Port]) -> Port:
    """The default query port (serve's defaults, no queue: a busy port answers 503 at once)."""
    return start_port()


@pytest.fixture()
def ch(port: Port) -> Iterator[Client]:
    """clickhouse-connect's HTTP client, as Superset and scripts use it."""
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port.port, username=USER, password=PASSWORD,
                                           database="clickstream")
    yield client
    client.close()


# -- a real `clickstream serve` ------------------------------------------------------------------

SERVE_PASSWORD = "serve-sql-secret"
STITCH_TOKEN = "serve-stitch-secret"


@dataclass
class Served:
    """A running serve with the load model's traffic flushed: `truth` is the independent computation."""

    server: Server
    truth: Truth
    ledger: Ledger

    @property
    def site(self) -> str:
        return self.truth.site

    @property
    def sql_port(self) -> int:
        return int(self.server.env["CLICKSTREAM_SQL_PORT"])

    def client(self) -> Client:
        """clickhouse-connect's HTTP client on the query port, as a script or Superset opens it."""
        return clickhouse_connect.get_client(host="127.0.0.1", port=self.sql_port, username=USER,
                                             password=SERVE_PASSWORD, database="clickstream")


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`clickstream serve` with the query port on (2 slots, no queue: the 503 test needs no waiting),
    the model's traffic (visits over days, channels, bots, experiments, leads through /stitch)."""
    server = start_server("serve", tmp_path_factory.mktemp("served") / "data", {
        "CLICKSTREAM_SQL_PASSWORD": SERVE_PASSWORD, "CLICKSTREAM_STITCH_TOKEN": STITCH_TOKEN,
        "CLICKSTREAM_SQL_MAX_CONCURRENT_QUERIES": "1", "CLICKSTREAM_SQL_QUEUE_MAX_WAIT_MS": "0",
    }, ready_path="/readyz")
    try:
        traffic = generate(ModelConfig(seed=11, visitors=400, site_id="dashboards.example"))
        ledger = asyncio.run(drive(server.url, traffic, seed=11, rate=None, concurrency=16,
                                   stitch_token=STITCH_TOKEN))
        assert not ledger.unexpected, ledger.unexpected[:5]
        query, client = port_rows_query(server.sql_url, USER, SERVE_PASSWORD)
        try:
            wait_for_flush(query, traffic.config.site_id, len(ledger.accepted), len(ledger.stitched), timeout_s=120)
        finally:
            client.close()
        yield Served(server, Truth(traffic), ledger)
    finally:
        server.stop()
