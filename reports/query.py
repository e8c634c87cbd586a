"""Where `clickstream sql`, `clickstream experiments` and the load audit run a query: one query path.

- While `serve` runs (it holds the embedded directory: chDB locks it to one process), through its
  query port, ClickHouse's HTTP interface, with clickhouse-connect's HTTP client and the password
  from CLICKSTREAM_SQL_PASSWORD or `<data-dir>/.sql_password` (what `make run` writes).
- When nothing holds the directory, on it directly, through the same engine code the query port
  runs (reports/query_port/engine.py: readonly=1, the caps, the statement guard).
- With a ClickHouse server URL (CLICKSTREAM_CLICKHOUSE_URL=http(s)://...), on that server, in a
  session pinned to readonly=1.

Every path reads the answer as JSONCompact, so the output is the same wherever the query ran:
`{"columns": [name], "types": [ClickHouse type], "rows": [[value]]}` with JSON values (numbers,
strings for dates and times, null; NaN and infinities as null).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from clickstream.core.clickhouse import DATABASE, connect
from clickstream.core.settings import Settings
from reports.query_port import QueryPortConfig, QueryPortError
from reports.query_port.engine import Job, QueryEngine

Result = dict[str, Any]
#: A query function: SQL -> rows as {column: value} (load audit, tests).
RowsQuery = Callable[[str], list[dict[str, Any]]]
#: The answer format of every path (see the module doc).
ANSWER_FORMAT = "JSONCompact"
PASSWORD_FILE = ".sql_password"
_SERVER_RESPONSE = re.compile(r"server response: (Code: .*?)(?: \(for url [^)]*\))?$", re.DOTALL)


class QueryError(RuntimeError):
    """A query refused or failed; the message is ClickHouse's (`Code: N. DB::Exception: ...`)."""


def held_by_another_process(clickhouse_dir: Path) -> bool:
    """True when a running ClickHouse (chDB) holds `clickhouse_dir`: ClickHouse keeps an exclusive
    flock on its `status` file. Checked first so that the CLI goes to the query port without making
    chDB print its lock error."""
    try:
        fd = os.open(clickhouse_dir / "status", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def sql_password(settings: Settings) -> str:
    """CLICKSTREAM_SQL_PASSWORD, else the password `make run` keeps in `<data-dir>/.sql_password`, else ''."""
    password = settings.sql_password.get_secret_value()
    if password:
        return password
    try:
        return (settings.data_dir / PASSWORD_FILE).read_text().strip()
    except OSError:
        return ""


def run_cli_query(settings: Settings, sql: str, port_url: str | None = None) -> Result:
    """Run one read query where it can run (module doc) and return columns, types and rows.

    `port_url` forces the query port at that URL (default http://CLICKSTREAM_SQL_HOST:SQL_PORT when
    the directory is held). Raises QueryError for a refused or failed query, RuntimeError when the
    directory is held and no password is known.
    """
    url = settings.resolved_clickhouse_url
    if port_url is None and not url.startswith("chdb://"):
        return _server_query(settings, url, sql)
    if port_url is None and not held_by_another_process(Path(url.removeprefix("chdb://"))):
        return local_query(settings, Path(url.removeprefix("chdb://")), sql)
    password = sql_password(settings)
    if not password:
        raise RuntimeError(f"{url} is held by a running process (clickstream serve); set CLICKSTREAM_SQL_PASSWORD "
                           f"(or write it to <data-dir>/{PASSWORD_FILE}) to query it through its query port")
    base = port_url or f"http://{settings.sql_host}:{settings.sql_port}"
    client = port_client(base, settings.sql_user, password)
    try:
        return run_on_client(client, sql)
    finally:
        client.close()


def port_client(base_url: str, user: str, password: str) -> Client:
    """clickhouse-connect's HTTP client on a query port (or any ClickHouse HTTP interface), database
    `clickstream`, no session (one client may then be used from several threads)."""
    parts = urlsplit(base_url)
    try:
        return clickhouse_connect.get_client(
            host=parts.hostname or "127.0.0.1", port=parts.port or 8123, username=user, password=password,
            secure=parts.scheme == "https", database=DATABASE, autogenerate_session_id=False,
            send_receive_timeout=600)
    except ClickHouseError as exc:
        raise QueryError(_server_text(exc)) from None


def run_on_client(client: Client, sql: str) -> Result:
    """One query through a clickhouse-connect client, answered as JSONCompact. Raises QueryError."""
    try:
        return parse_answer(client.raw_query(sql.strip().rstrip(";"), fmt=ANSWER_FORMAT))
    except ClickHouseError as exc:
        raise QueryError(_server_text(exc)) from None


def _server_text(exc: ClickHouseError) -> str:
    """The server's `Code: N. DB::Exception: …` from clickhouse-connect's wrapper text, when present."""
    match = _SERVER_RESPONSE.search(str(exc))
    return match.group(1).strip() if match else str(exc)


def local_query(settings: Settings, clickhouse_dir: Path, sql: str) -> Result:
    """One query on the embedded directory in this process, through the query port's engine (same
    guard, caps and readonly=1). Raises QueryError."""
    engine = QueryEngine(QueryPortConfig.for_local(settings), clickhouse_dir)
    try:
        engine.open()
        outcome = engine.execute(Job(text=sql.strip().rstrip(";"), default_format=ANSWER_FORMAT))
    except QueryPortError as exc:
        raise QueryError(exc.body(engine.version or "unknown").strip()) from None
    except RuntimeError as exc:
        raise QueryError(str(exc).strip()) from None
    finally:
        engine.close()
    return parse_answer(outcome.body)


def _server_query(settings: Settings, url: str, sql: str) -> Result:
    client = connect(url, readonly_session=True, max_result_rows=settings.sql_max_result_rows)
    try:
        return run_on_client(client, sql)
    finally:
        client.close()


def parse_answer(body: bytes) -> Result:
    """JSONCompact -> {"columns", "types", "rows"}; an empty body (SET, USE) has no columns. The
    stdlib parser keeps integers beyond 64 bits (UInt128/256) exact."""
    if not body.strip():
        return {"columns": [], "types": [], "rows": []}
    doc: Mapping[str, Any] = json.loads(body)
    meta = doc.get("meta", [])
    return {"columns": [m["name"] for m in meta], "types": [m["type"] for m in meta], "rows": doc.get("data", [])}


def as_dicts(result: Result) -> list[dict[str, Any]]:
    """Rows as {column: value}."""
    return [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]


def port_rows_query(base_url: str, user: str, password: str) -> tuple[RowsQuery, Client]:
    """A RowsQuery through a query port and the client behind it (close it when done)."""
    client = port_client(base_url, user, password)
    return (lambda sql: as_dicts(run_on_client(client, sql))), client
