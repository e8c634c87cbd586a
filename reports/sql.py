"""Read-only SQL for dashboards and `clickstream sql`: `POST /sql` on `serve`, and the CLI output.

chDB lets one process own a data directory, so while `serve` runs, `clickstream sql` goes through
this endpoint. Guarded three ways: `Authorization: Bearer <CLICKSTREAM_ADMIN_TOKEN>`
compared in constant time (401 otherwise; the route answers 503 when no token is configured);
only read statements are accepted (400); and the query runs on a ClickHouse session pinned to
readonly=1 with `max_result_rows` = CLICKSTREAM_SQL_MAX_RESULT_ROWS (overflow is an error, not a
silently truncated answer).

Response: `{"columns": [name], "types": [ClickHouse type], "rows": [[value]]}`.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from clickstream.core.component import Check
from clickstream.core.errors import ClickstreamError, Disabled, InvalidRequest, Unauthorized
from clickstream.core.http import bearer_matches

READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
_LEADING = re.compile(r"^(\s+|--[^\n]*\n?|/\*.*?\*/|\()+", re.DOTALL)
_LITERALS_AND_COMMENTS = re.compile(
    r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`(?:[^`\\]|\\.)*`|--[^\n]*|/\*.*?\*/", re.DOTALL)


class QueryError(ValueError):
    """A query refused before or by ClickHouse; the message is shown to the user."""


def first_keyword(sql: str) -> str:
    """The statement's first keyword, upper case, after comments, whitespace and parentheses."""
    rest = _LEADING.sub("", sql)
    match = re.match(r"[A-Za-z]+", rest)
    return match.group(0).upper() if match else ""


def check_read_only(sql: str) -> None:
    """Raise QueryError unless `sql` is one read statement (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS)."""
    code = _LITERALS_AND_COMMENTS.sub(" ", sql).strip().rstrip(";")
    if ";" in code:
        # TRICKY: chDB runs every statement of a multi-statement text and the results of the extra
        # ones desynchronise the connection's next answers (seen on chDB 26.9); one at a time.
        raise QueryError("one statement per query: remove the ';' between statements")
    keyword = first_keyword(sql)
    if keyword not in READ_STATEMENTS:
        raise QueryError(f"only read queries are allowed ({', '.join(READ_STATEMENTS)}), got {keyword or 'nothing'}")


def run_query(client: Client, sql: str) -> dict[str, Any]:
    """Run a read query and return columns, types and rows. Raises QueryError."""
    check_read_only(sql)
    try:
        result = client.query(sql.strip().rstrip(";"))
    except ClickHouseError as exc:
        raise QueryError(str(exc)) from exc
    return {
        "columns": list(result.column_names),
        "types": [t.name for t in result.column_types],
        "rows": [list(r) for r in result.result_rows],
    }


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: header, rule, one line per row."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (dict, list, tuple)):
        return dumps(value).decode()
    return str(value)


class SqlEndpoint:
    """`POST /sql` as a component of `serve`."""

    def __init__(self, client: Client | None, token: str) -> None:
        self.client = client
        self.token = token
        self._lock = threading.Lock()

    def routes(self) -> list[BaseRoute]:
        return [Route("/sql", self.handle, methods=["POST"])]

    def start(self) -> None:
        pass

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()

    def readiness(self) -> list[Check]:
        return []

    def update_gauges(self) -> None:
        pass

    async def handle(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except ClickstreamError as exc:
            return exc.response()

    async def _handle(self, request: Request) -> Response:
        if not self.token or self.client is None:
            raise Disabled("POST /sql is off: set CLICKSTREAM_ADMIN_TOKEN to enable it")
        if not bearer_matches(request.headers.get("authorization"), self.token):
            raise Unauthorized("missing or wrong Authorization: Bearer <CLICKSTREAM_ADMIN_TOKEN>")
        body = await request.body()
        sql = body.decode("utf-8", "replace")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                sql = str(orjson.loads(body)["query"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise InvalidRequest('JSON body must be {"query": "SELECT ..."}', code="bad_request") from None
        client = self.client
        try:
            result = await asyncio.to_thread(self._run, client, sql)
        except QueryError as exc:
            raise InvalidRequest(str(exc), code="query_failed") from None
        return Response(dumps(result), media_type="application/json")

    def _run(self, client: Client, sql: str) -> dict[str, Any]:
        with self._lock:
            return run_query(client, sql)
