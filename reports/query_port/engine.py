"""One query on the embedded engine: fresh connections pinned to readonly=1 and the caps, the guard,
the run, the body in the client's format.

A chDB connection (`chdb.connect`) is a ClickHouse session of its own on the one engine of the
process: it shares data with the flusher's clickhouse-connect chdb client but not settings, its
connection string sets session settings before `readonly` applies, and it costs ~0.3 ms (verified
on chDB 26.9.2.1). So every query gets two fresh connections, and nothing a query does (SET, a
SETTINGS clause, a failed query) can leak into the next query or into the writer: the *guard*
connection (caps only: a client's `limit` must not shape what the guard reads) and the *query*
connection (caps and the client's checked settings). One long-lived *anchor* connection, opened by
`open()`, keeps the engine up between queries and reads its catalog.

The guard's verdict on a read statement depends on its text alone (parameters are typed literals and
cannot add a function or a table), so it is kept for the last CHECKED_MAX texts: a dashboard sends the
same dozen texts on every render, and their formatQuery + EXPLAIN AST cost 10-20 ms each (BENCHMARKS.md
"Dashboard first render"). A text with an `Identifier` parameter (a table name chosen by a value) is
checked every time.
"""

from __future__ import annotations

import gzip
import os
import threading
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import chdb

from reports.query_port.compression import native_compress
from reports.query_port.config import QueryPortConfig
from reports.query_port.errors import (
    NOT_IMPLEMENTED,
    QUERY_WAS_CANCELLED,
    UNKNOWN_FORMAT,
    QueryPortError,
    default_status,
    error,
    statuses_by_code,
)
from reports.query_port.guard import Statement, check_statement, parse_set, parse_use, quote_identifier
from reports.query_port.native import NativeTranscodeError, native_with_revision
from reports.query_port.policy import SettingsPolicy
from reports.query_port.sessions import Session

#: The guard connection keeps only these caps: a client's result caps must not limit EXPLAIN AST.
_GUARD_CAPS = ("max_execution_time", "max_memory_usage", "max_threads")
#: Read statements whose check is kept, by the client's text (least recently used dropped first).
CHECKED_MAX = 256


@dataclass
class Job:
    """One request, parsed and checked against the policy: what the worker thread runs.

    `params` are query parameters in wire form (TSV-escaped `param_<name>` values); `settings` the
    client's checked settings (session's, then URL's); `revision` the client protocol revision for
    Native (0 = as chDB writes it); `compression` gzip, deflate or None, at `compression_level`;
    `native_compression` = `compress=1`. `marker` tags the running statement for KILL QUERY.
    """

    text: str
    params: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    database: str = "clickstream"
    default_format: str = "TabSeparated"
    query_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    session: Session | None = None
    revision: int = 0
    compression: str | None = None
    compression_level: int = 3
    native_compression: bool = False
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    cancelled: bool = False


@dataclass
class Outcome:
    """A finished query: the body (already compressed when asked), its format and Content-Type,
    Content-Encoding, X-ClickHouse-Summary values and X-ClickHouse-Timezone."""

    body: bytes
    format: str
    content_type: str
    content_encoding: str | None
    summary: dict[str, str]
    timezone: str


def summary(read_rows: int = 0, read_bytes: int = 0, result_rows: int = 0, result_bytes: int = 0,
            elapsed_ns: int = 0) -> dict[str, str]:
    """X-ClickHouse-Summary as ClickHouse 24+ sends it: every value a decimal string. chDB reports what
    the query read (storage_rows_read/storage_bytes_read), the result (rows_read/bytes_read of the
    result object) and elapsed (s); total_rows_to_read is not known up front and repeats read_rows."""
    return {
        "read_rows": str(read_rows), "read_bytes": str(read_bytes), "written_rows": "0", "written_bytes": "0",
        "total_rows_to_read": str(read_rows), "result_rows": str(result_rows),
        "result_bytes": str(result_bytes), "elapsed_ns": str(elapsed_ns),
    }


def _connect(connection_string: str) -> Any:
    """chdb.connect: a session of its own on the process's one engine. Raises RuntimeError."""
    return chdb.connect(connection_string)  # type: ignore[no-untyped-call]


def _text(conn: Any, sql: str, params: Mapping[str, str] | None = None) -> str:
    result: bytes = conn.query(sql, "TabSeparatedRaw", params=dict(params or {})).bytes()
    return result.decode("utf-8", "replace")


class QueryEngine:
    """Runs checked queries on the embedded engine at `data_path` (the flusher's chdb:// directory).

    `open()` before the first query, `close()` after the last; `execute(job)` runs in a worker thread.
    """

    def __init__(self, config: QueryPortConfig, data_path: str | os.PathLike[str]) -> None:
        self.config = config
        # chDB compares engine paths literally; clickhouse-connect normalizes with realpath too.
        self.data_path = os.path.realpath(os.fspath(data_path))
        self.version = ""
        self.timezone = "UTC"
        self.display_name = "clickstream"
        self.policy = SettingsPolicy(config, ())
        self._formats: dict[str, tuple[str, str]] = {}  # lower name -> (name, content type)
        self._table_functions: frozenset[str] = frozenset()
        self._status_by_code: dict[int, int] = {}
        self._anchor: Any = None
        self._checked: OrderedDict[str, Statement] = OrderedDict()
        self._checked_lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self._anchor is not None

    def open(self) -> None:
        """Open the engine (or join the one the writer opened) and read its catalog: version,
        time zone, setting names, output formats, table functions, error codes. Raises RuntimeError
        when another process holds the directory, or this process holds another path (chDB 26.9)."""
        Path(self.data_path).mkdir(parents=True, exist_ok=True)
        self._anchor = anchor = _connect(f"{self.data_path}?readonly=1")
        self.version, self.timezone, self.display_name = (
            _text(anchor, "SELECT version(), timezone(), displayName()").rstrip("\n").split("\t"))
        self.policy = SettingsPolicy(self.config, _lines(_text(anchor, "SELECT name FROM system.settings")))
        self._formats = {}
        for row in _lines(_text(anchor, "SELECT name, content_type FROM system.formats WHERE is_output")):
            name, content_type = row.split("\t", 1)
            self._formats[name.lower()] = (name, content_type)
        functions = _lines(_text(anchor, "SELECT name FROM system.table_functions"))
        self._table_functions = frozenset(name.lower() for name in functions)
        codes = _lines(_text(anchor, "SELECT number, errorCodeToName(number) FROM numbers(2000) "
                                     "WHERE errorCodeToName(number) != ''"))
        self._status_by_code = statuses_by_code({int(c): n for c, n in (row.split("\t") for row in codes)})

    def close(self) -> None:
        """Release the anchor connection (the engine stops when no other connection holds it). Idempotent."""
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None

    def status_for(self, code: int) -> int:
        """ClickHouse's HTTP status for an error code (exceptionCodeToHTTPStatus.cpp)."""
        return self._status_by_code.get(code) or default_status(code)

    def canonical_format(self, name: str) -> tuple[str, str]:
        """(name as the engine spells it, Content-Type) of an output format. Raises 73 UNKNOWN_FORMAT."""
        found = self._formats.get(name.lower())
        if found is None:
            raise error(UNKNOWN_FORMAT, f"Unknown output format {name}")
        return found

    def execute(self, job: Job) -> Outcome:
        """Run one request (worker thread): the guard on its connection, then the statement on the
        query connection. Raises QueryPortError (the engine's errors keep their code)."""
        started = time.monotonic_ns()
        guard = query = None
        try:
            statement = self._checked_before(job.text)
            if statement is None:
                guard = _connect(self._connection_string(self._guard_caps()))
                statement = check_statement(lambda sql, params: _text(guard, sql, params), job.text, job.params,
                                            self._table_functions)
                if statement.kind in ("SET", "USE"):
                    return self._session_statement(guard, job, statement, started)
                self._keep_checked(job.text, statement)
            query = _connect(self._connection_string({**self.policy.caps(), **job.settings}))
            return self._run(query, job, statement, started)
        except RuntimeError as exc:
            if job.cancelled:
                raise error(QUERY_WAS_CANCELLED, "Query was cancelled: the client closed the connection") from None
            raise QueryPortError.from_engine(exc) from None
        finally:
            for conn in (query, guard):
                if conn is not None:
                    conn.close()

    def _checked_before(self, text: str) -> Statement | None:
        """The statement of `text` as the guard passed it before, or None."""
        with self._checked_lock:
            statement = self._checked.get(text)
            if statement is not None:
                self._checked.move_to_end(text)
            return statement

    def _keep_checked(self, text: str, statement: Statement) -> None:
        """Keep a read statement the guard passed (not one with an Identifier parameter)."""
        if ":Identifier}" in text.replace(" ", ""):
            return
        with self._checked_lock:
            self._checked[text] = statement
            while len(self._checked) > CHECKED_MAX:
                self._checked.popitem(last=False)

    def kill(self, marker: str) -> None:
        """KILL QUERY the statement tagged /* qport:<marker> */, from another connection (chDB shares
        system.processes across the connections of the engine). Never raises."""
        try:
            conn = _connect(f"{self.data_path}?readonly=1")
        except RuntimeError:
            return
        try:
            conn.query(f"KILL QUERY WHERE startsWith(query, '/* qport:{marker} */') ASYNC", "TabSeparated")
        except RuntimeError:
            pass
        finally:
            conn.close()

    def _guard_caps(self) -> dict[str, str]:
        caps = self.policy.caps()
        return {name: caps[name] for name in _GUARD_CAPS}

    def _connection_string(self, settings: Mapping[str, str]) -> str:
        """`<path>?<settings>&readonly=1`: chDB applies these as the new connection's session settings
        before readonly takes effect (verified on chDB 26.9). Values were checked by the policy."""
        merged = {**settings, "readonly": "1"}
        return self.data_path + "?" + "&".join(f"{k}={quote(v, safe='/:,;|')}" for k, v in merged.items())

    def _session_statement(self, guard: Any, job: Job, statement: Statement, started: int) -> Outcome:
        """SET (checked like URL settings) and USE (the database must exist) change the session; without
        a session they are checked and forgotten, as ClickHouse does with its per-request session."""
        if statement.kind == "SET":
            changes = self.policy.check_all(parse_set(statement.sql))
            if job.session is not None:
                job.session.settings.update(changes)
        else:
            database = parse_use(statement.sql)
            guard.query(f"USE {quote_identifier(database)}", "TabSeparated")
            if job.session is not None:
                job.session.database = database
        fmt, content_type = self.canonical_format(job.default_format)
        return Outcome(b"", fmt, content_type, None, summary(elapsed_ns=time.monotonic_ns() - started),
                       self.timezone)

    def _run(self, conn: Any, job: Job, statement: Statement, started: int) -> Outcome:
        """Run the checked statement; the body as the format writes it, re-encoded for the client's
        Native revision when asked, compressed when asked."""
        conn.query(f"USE {quote_identifier(job.database)}", "TabSeparated")
        fmt, content_type = self.canonical_format(statement.format or job.default_format)
        result = conn.query(f"/* qport:{job.marker} */ {statement.sql}", fmt, params=job.params)
        body: bytes = result.bytes()
        stats = summary(result.storage_rows_read(), result.storage_bytes_read(), result.rows_read(),
                        result.bytes_read(), int(result.elapsed() * 1e9) or time.monotonic_ns() - started)
        if fmt == "Native" and job.revision > 0:
            try:
                body = native_with_revision(body, job.revision)
            except NativeTranscodeError as exc:
                raise error(NOT_IMPLEMENTED, f"Native format for client_protocol_version={job.revision} is not "
                                             f"supported by the query port for {exc}; use another format") from None
        if job.native_compression:
            body = native_compress(body)
        encoding = job.compression if body else None
        if encoding == "gzip":
            body = gzip.compress(body, compresslevel=job.compression_level, mtime=0)
        elif encoding == "deflate":
            body = zlib.compress(body, job.compression_level)
        timezone = job.settings.get("session_timezone") or self.timezone
        return Outcome(body, fmt, content_type, encoding, stats, timezone)


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line]
