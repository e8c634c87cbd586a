"""What the query port needs from the process settings (`CLICKSTREAM_SQL_*`).

Units are in the names. The defaults suit a 2-core machine that also ingests: BENCHMARKS.md
"Query port" measures the collector's p99 with and without a heavy dashboard query, and README.md
"Configuration" gives the numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from clickstream.core.settings import Settings

SAFE_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class QueryPortConfig:
    """Bounds and credentials of the query port. Raises ValueError on a value that cannot work."""

    #: The listener's password; empty only for a query run in this process (`for_local`).
    password: str = field(default="", repr=False)
    user: str = "dashboards"
    host: str = "127.0.0.1"
    port: int = 8123
    database: str = "clickstream"
    #: Queries running in the engine at once; one more waits `queue_max_wait_ms`, then gets HTTP 503 +
    #: Retry-After (code 202 TOO_MANY_SIMULTANEOUS_QUERIES).
    max_concurrent_queries: int = 2
    #: ClickHouse `max_execution_time` (s): a longer query fails with code 159 TIMEOUT_EXCEEDED (HTTP 408).
    max_execution_time_s: float = 30.0
    #: ClickHouse `max_memory_usage` per query (bytes): code 241 MEMORY_LIMIT_EXCEEDED over it.
    max_memory_usage_bytes: int = 1 << 30
    #: ClickHouse `max_result_rows` / `max_result_bytes` with result_overflow_mode=throw (code 396).
    max_result_rows: int = 100_000
    max_result_bytes: int = 100 << 20
    #: ClickHouse `max_threads` of a dashboard query; 1 keeps a core for ingest on a 2-core machine.
    max_threads: int = 1
    #: The query text (URL `query` + body), like ClickHouse's `max_query_size` (code 62 over it).
    max_query_size_bytes: int = 256 * 1024
    #: Request body read limit (bytes, after decompression; multipart forms included).
    max_body_bytes: int = 1 << 20
    #: HTTP sessions (`session_id`): ClickHouse's default_session_timeout / max_session_timeout.
    session_timeout_s: int = 60
    max_session_timeout_s: int = 3600
    max_sessions: int = 1000
    #: How long a query waits for a free slot before the 503 (ClickHouse's `queue_max_wait_ms`): the
    #: panels of a dashboard, sent at once, queue instead of failing.
    queue_max_wait_ms: int = 10_000
    #: Seconds a client is told to wait (Retry-After) when all query slots are taken.
    retry_after_s: int = 1
    #: Value of `enable_http_compression` when the client does not set it. chDB 26.9 reports 1 in
    #: system.settings, and clickhouse-connect / clickhouse-go then send only Accept-Encoding.
    http_compression_default: bool = True
    #: Settings a client may set besides policy.DEFAULT_ALLOWED_SETTINGS (names only; values are checked).
    extra_allowed_settings: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.user:
            raise ValueError("user must not be empty")
        for name in ("max_concurrent_queries", "max_threads", "max_query_size_bytes", "max_body_bytes",
                     "max_sessions", "session_timeout_s", "max_session_timeout_s", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.queue_max_wait_ms < 0:
            raise ValueError(f"queue_max_wait_ms must be >= 0, got {self.queue_max_wait_ms!r}")
        for name in ("max_execution_time_s", "max_memory_usage_bytes", "max_result_rows", "max_result_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not SAFE_IDENTIFIER.match(self.database):
            raise ValueError(f"database must be a plain identifier, got {self.database!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryPortConfig | None:
        """The port's configuration from `CLICKSTREAM_SQL_*`; None when CLICKSTREAM_SQL_PASSWORD is unset
        (the port is off)."""
        password = settings.sql_password.get_secret_value()
        return cls.for_local(settings, password=password) if password else None

    @classmethod
    def for_local(cls, settings: Settings, password: str = "") -> QueryPortConfig:
        """The caps of `CLICKSTREAM_SQL_*`, for a query run in this process without a listener
        (`clickstream sql` on a directory no process holds) or, with `password`, for the port."""
        return cls(
            password=password, user=settings.sql_user, host=settings.sql_host, port=settings.sql_port,
            max_concurrent_queries=settings.sql_max_concurrent_queries,
            max_execution_time_s=settings.sql_max_execution_time_s,
            max_memory_usage_bytes=settings.sql_max_memory_usage_bytes,
            max_result_rows=settings.sql_max_result_rows, max_result_bytes=settings.sql_max_result_bytes,
            max_threads=settings.sql_max_threads, queue_max_wait_ms=settings.sql_queue_max_wait_ms,
        )
