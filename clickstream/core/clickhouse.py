"""ClickHouse access, only through clickhouse-connect: connect, migrate, classify errors, insert.

`CLICKSTREAM_CLICKHOUSE_URL` picks the engine (docs/architecture.md): `chdb:///path` is embedded
ClickHouse in this process (chDB locks its directory: one process per directory);
`http(s)://user:password@host:8123/clickstream` is a server or cluster. Same DDL and queries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.binding import format_str, quote_identifier
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from clickstream.core import ddl, resources
from clickstream.core.component import Check

log = logging.getLogger(__name__)

DATABASE = "clickstream"
#: Every table an insert reaches: the raw tables and every materialized-view target. Each needs a
#: dedup window or a retried insert is counted twice (verified on chDB 26.9, see tests).
DEDUP_TABLES = ("events", "sessions", "variant_exposures", "lead_events", "conversions", "dead_letters",
                "session_engagement")

#: Settings of every insert. TRICKY: async_insert defaults to 1 in ClickHouse 26.x, and an async
#: insert ignores insert_deduplication_token semantics we rely on; pass 0 explicitly.
INSERT_SETTINGS: dict[str, Any] = {
    "async_insert": 0,
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    # On a cluster the raw tables are Distributed (clickstream.core.cluster): the insert returns
    # only once every shard stored its rows, with this insert's dedup token (no background queue
    # on the receiving node). A no-op on a single server. deploy/README.md "Exactly once on a cluster".
    "distributed_foreground_insert": 1,
}

#: ClickHouse error codes that mean "this data cannot be inserted" (ErrorCodes.cpp): the flusher
#: splits the batch and dead-letters the offending rows. Every other error is treated as
#: transient and retried while the spool keeps the data.
DATA_ERROR_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    26,   # CANNOT_PARSE_QUOTED_STRING
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,   # ATTEMPT_TO_READ_AFTER_EOF
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    190,  # SIZES_OF_ARRAYS_DONT_MATCH
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    376,  # CANNOT_PARSE_UUID
    407,  # DECIMAL_OVERFLOW
    469,  # VIOLATED_CONSTRAINT
    1001,  # STD_EXCEPTION (e.g. invalid UTF-8 conversions inside a function)
})

_CODE = re.compile(r"Code: (\d+)")


def error_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of an exception, when it carries one."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def is_data_error(exc: BaseException) -> bool:
    """True when ClickHouse refused the data itself (retrying the same rows cannot succeed).

    TRICKY: a parse error quotes the rows after the point of failure, cut at a byte count; when the
    cut falls inside a UTF-8 character, chDB cannot decode its own message and clickhouse-connect's
    chdb backend raises a DatabaseError without a code, chained to the UnicodeDecodeError
    (verified on chDB 26.9). Only a message quoting the rows does that: a data error too.
    """
    if isinstance(exc, OperationalError):
        return False
    if isinstance(exc, ClickHouseError) and isinstance(exc.__cause__, UnicodeDecodeError):
        return True
    return isinstance(exc, ClickHouseError) and error_code(exc) in DATA_ERROR_CODES


def is_embedded(client: Client) -> bool:
    """True for the embedded engine (chDB in this process). chDB locks its directory, so this process is
    the only one using that ClickHouse while the client is open."""
    return type(client).__name__ == "ChdbClient"  # clickhouse_connect.driver._chdbclient (a private module)


def connect(url: str, *, readonly_session: bool = False, max_result_rows: int = 0) -> Client:
    """A client on database `clickstream` (created when missing).

    With `readonly_session`, the session is pinned to readonly=1 before it is returned: on chDB a
    SETTINGS clause of a non-SELECT statement leaks into the session (verified on chDB 26.9), so
    dashboard queries get a client of their own that can never write, whatever they send.
    """
    if url.startswith("chdb://"):
        path = Path(url.removeprefix("chdb://"))
        path.mkdir(parents=True, exist_ok=True)
        bootstrap = clickhouse_connect.get_client(dsn=f"chdb://{path}")
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}", database=DATABASE)
        # TRICKY: chDB runs one engine per process, on one path at a time, until every client on
        # it is closed; a leaked client keeps the next test (or data dir) from opening.
        bootstrap.close()
    else:
        parts = urlsplit(url)
        database = parts.path.strip("/") or DATABASE
        base = url.replace(parts.path, "") if parts.path else url
        bootstrap = clickhouse_connect.get_client(dsn=base)
        bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        bootstrap.close()
        client = clickhouse_connect.get_client(dsn=base, database=database)
    if readonly_session:
        if max_result_rows:
            client.command(f"SET max_result_rows = {int(max_result_rows)}")
            client.command("SET result_overflow_mode = 'throw'")
        client.command("SET readonly = 1")
    return client


def open_clickhouse(url: str, *, retention_days: int = 0, target: MigrationTarget | None = None) -> Client:
    """Connect, migrate, log the engine and check the settings exactly-once depends on.

    `target` renders the migrations (default: one server; clickstream.core.cluster.target for a
    cluster). Raises RuntimeError when a dedup window is missing (retries would double count), and
    ClickHouseError when a migration fails.
    """
    client = connect(url)
    applied = migrate(client, retention_days=retention_days, target=target or SINGLE_SERVER)
    log.info("ClickHouse: %s; migrations applied now: %s", describe(client, url), applied or "none")
    problems = check_guarantees(client)
    if problems:
        client.close()
        raise RuntimeError("; ".join(problems))
    return client


def split_statements(text: str) -> list[str]:
    """Statements of a migration file: separated by `;` at the end of a line."""
    return [s.strip() for s in re.split(r";\s*$", text, flags=re.MULTILINE) if s.strip()]


def migrations(sql_dir: Traversable | None = None) -> list[tuple[int, str, Traversable]]:
    """(version, name, file) of every `NNNN_name.sql` migration, in version order.

    `sql_dir` defaults to the migrations shipped with the package (clickstream.core.resources).
    """
    folder = sql_dir if sql_dir is not None else resources.migrations()
    found = [(int(f.name[:4]), f.name.removesuffix(".sql"), f) for f in folder.iterdir()
             if re.fullmatch(r"\d{4}_\w+\.sql", f.name)]
    return sorted(found, key=lambda item: item[0])


SCHEMA_MIGRATIONS_COLUMNS = ("version UInt32, name String, checksum String, "
                             "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)")


@dataclasses.dataclass(frozen=True)
class MigrationTarget:
    """Where migrations go: one server (the default) or a cluster (clickstream.core.cluster.target).

    `render` turns a migration file into the statements to run; `settings` go with each of them;
    `events_table` is the table that carries the retention TTL.
    """

    render: Callable[[str], list[str]] = split_statements
    database_ddl: str = ""
    schema_migrations_ddl: str = (f"CREATE TABLE IF NOT EXISTS schema_migrations ({SCHEMA_MIGRATIONS_COLUMNS}) "
                                  "ENGINE = MergeTree ORDER BY version")
    events_table: str = "events"
    on_cluster: str = ""
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def retention_ddl(self, retention_days: int) -> str:
        """The statement that sets (days > 0) or removes (0) the TTL of events."""
        head = f"ALTER TABLE {self.events_table}{self.on_cluster}"
        if retention_days > 0:
            return f"{head} MODIFY TTL toDateTime(ts) + INTERVAL {int(retention_days)} DAY"
        return f"{head} REMOVE TTL"


SINGLE_SERVER = MigrationTarget()


def migrate(client: Client, *, retention_days: int = 0, sql_dir: Traversable | None = None,
            target: MigrationTarget = SINGLE_SERVER) -> list[str]:
    """Apply pending migrations (each file idempotent) and the events TTL; return applied names.

    Records every applied file in `schema_migrations` (version, name, sha256). Raises
    ClickHouseError when a statement fails (the migration is then not recorded). `target` renders
    each file (one server by default; a cluster with clickstream.core.cluster.target).
    """
    settings = dict(target.settings)
    if target.database_ddl:
        client.command(target.database_ddl, settings=settings)
    client.command(target.schema_migrations_ddl, settings=settings)
    done: dict[int, str] = {
        int(v): str(c) for v, c in client.query("SELECT version, checksum FROM schema_migrations").result_rows
    }
    applied = []
    for version, name, path in migrations(sql_dir):
        text = path.read_text()
        if version in done:
            if done[version] != hashlib.sha256(text.encode()).hexdigest():
                log.warning("migration %s changed after it was applied; released migrations are immutable, "
                            "add a new numbered file instead", name)
            continue
        for statement in target.render(text):
            client.command(statement, settings=settings)
        client.insert("schema_migrations", [[version, name, hashlib.sha256(text.encode()).hexdigest()]],
                      column_names=["version", "name", "checksum"], settings={"async_insert": 0})
        applied.append(name)
        log.info("migration applied: %s", name)
    apply_retention(client, retention_days, target)
    return applied


def apply_retention(client: Client, retention_days: int, target: MigrationTarget = SINGLE_SERVER) -> None:
    """Set (or remove, for 0) the TTL of `events`: rows older than `retention_days` are dropped."""
    create = client.query(
        "SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": target.events_table},
    ).result_rows[0][0]
    if retention_days > 0 or " TTL " in create:
        client.command(target.retention_ddl(retention_days), settings=dict(target.settings))


def check_guarantees(client: Client) -> list[str]:
    """Problems with the settings exactly-once depends on (empty when all is well).

    Checked on every table an insert reaches: DEDUP_TABLES and the target of every materialized
    view in the database (a roll-up added by a later migration is covered without a list to keep).
    A Distributed table (a cluster, clickstream.core.cluster) must have a sharding key, and its
    local table the dedup window.
    """
    rows = client.query(
        "SELECT name, engine, engine_full, create_table_query FROM system.tables WHERE database = currentDatabase()"
    ).result_rows
    tables: dict[str, tuple[str, str]] = {str(name): (str(engine), str(full)) for name, engine, full, _ in rows}
    reached = set(DEDUP_TABLES)
    for _, engine, _, create in rows:
        if engine == "MaterializedView":
            view = ddl.parse(str(create))
            if view.target is not None:
                reached.add(view.target.name)
    problems = []
    for table in sorted(reached):
        engine, full = tables.get(table, ("", ""))
        if engine == "Distributed":
            args = ddl.call_args(full)
            if len(args) < 4:
                problems.append(f"Distributed table {table} has no sharding key: it cannot split inserts across shards")
            table = args[2].strip("'`\"") if len(args) > 2 else table
            engine, full = tables.get(table, ("", ""))
        if not re.search(r"deduplication_window = [1-9]", full):
            problems.append(f"table {table} has no deduplication window: retried inserts would count twice")
    return problems


def ping_check(client: Client) -> Check:
    """Readiness of a ClickHouse connection (`/readyz`): `clickhouse_reachable`, never raises."""
    try:
        return Check("clickhouse_reachable", bool(client.ping()))
    except Exception as exc:  # readiness reports, it does not raise
        return Check("clickhouse_reachable", False, str(exc)[:200])


def describe(client: Client, url: str) -> str:
    """'chdb 26.9.2.1 (embedded, /path)' or 'clickhouse 25.3 (http://host:8123)' for the start log."""
    version = client.query("SELECT version()").result_rows[0][0]
    if url.startswith("chdb://"):
        return f"chDB {version} (embedded, {url.removeprefix('chdb://')})"
    parts = urlsplit(url)
    return f"ClickHouse {version} ({parts.scheme}://{parts.hostname}:{parts.port})"


#: The rows of one insert, JSONEachRow lines: one buffer, or byte ranges in order (the flusher's block
#: rows, flusher/loop.py), each holding whole lines.
Rows = bytes | Sequence[bytes | memoryview]
#: Buffers per `writev(2)` call (POSIX IOV_MAX; Linux: 1024).
IOV_MAX = os.sysconf("SC_IOV_MAX")


class Sink(Protocol):
    """Where the flusher writes: one JSONEachRow batch, deduplicated by `token`."""

    def insert(self, table: str, rows: Rows, token: str) -> None: ...


class ClickHouseSink:
    """The real sink: `INSERT INTO table FORMAT JSONEachRow` with a dedup token, synchronously.

    Byte ranges on the embedded engine are written to a temporary file with `writev(2)` and inserted
    with `INSERT … FROM INFILE … FORMAT JSONEachRow`, which is what clickhouse-connect's chDB backend
    does with one buffer (`execute_raw_insert` in clickhouse_connect/driver/_backend/chdb_backend.py),
    without first joining the ranges into one (BENCHMARKS.md "Flusher"). Over HTTP, and for one buffer,
    `raw_insert`.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.embedded = is_embedded(client)

    def insert(self, table: str, rows: Rows, token: str) -> None:
        settings = {**INSERT_SETTINGS, "insert_deduplication_token": token}
        if isinstance(rows, bytes):
            self.client.raw_insert(table, None, rows, fmt="JSONEachRow", settings=settings)
        elif self.embedded:
            self._insert_file(table, rows, settings)
        else:
            self.client.raw_insert(table, None, b"".join(rows), fmt="JSONEachRow", settings=settings)

    def _insert_file(self, table: str, rows: Sequence[bytes | memoryview], settings: Mapping[str, Any]) -> None:
        fd, path = tempfile.mkstemp(prefix="clickstream-insert-", suffix=".jsonl")
        try:
            try:
                write_all(fd, rows)
            finally:
                os.close(fd)
            # the settings as clickhouse-connect applies a call's settings on chDB: set for this
            # statement only, under the connection's lock, and restored after it
            self.client.command(f"INSERT INTO {quote_identifier(table)} FROM INFILE {format_str(path)} "
                                "FORMAT JSONEachRow", settings=dict(settings))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def write_all(fd: int, buffers: Sequence[bytes | memoryview]) -> None:
    """Write `buffers` to `fd` in order, IOV_MAX at a time with `writev(2)`; a short write (a signal, a
    full disk) is completed with `write(2)`. Raises OSError (e.g. ENOSPC)."""
    for start in range(0, len(buffers), IOV_MAX):
        chunk = buffers[start : start + IOV_MAX]
        written = os.writev(fd, chunk)
        if written < sum(memoryview(b).nbytes for b in chunk):
            rest = memoryview(b"".join(chunk))[written:]
            while rest:
                rest = rest[os.write(fd, rest):]
