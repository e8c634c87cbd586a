"""Where `clickstream sql` runs a query: a server URL, the embedded directory, or a running serve."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

import httpx

from clickstream.core.clickhouse import connect
from clickstream.core.settings import Settings
from reports.sql import check_read_only, run_query


def _locked(exc: BaseException) -> bool:
    text = str(exc)
    return "Cannot lock file" in text or "Unable to open the chdb engine" in text


def held_by_another_process(clickhouse_dir: Path) -> bool:
    """True when a running ClickHouse (chDB) holds `clickhouse_dir`: ClickHouse keeps an exclusive
    flock on its `status` file. Checked first so that the CLI goes to POST /sql without making
    chDB print its lock error."""
    status = clickhouse_dir / "status"
    try:
        fd = os.open(status, os.O_RDONLY)
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


def _token_file(settings: Settings) -> str:
    """The admin token `make run` keeps in `<data-dir>/.admin_token`, if any."""
    try:
        return (settings.data_dir / ".admin_token").read_text().strip()
    except OSError:
        return ""


def run_cli_query(settings: Settings, sql: str, server_url: str | None = None) -> dict[str, Any]:
    """Run a read query and return {"columns", "types", "rows"}.

    Raises QueryError for a refused query, RuntimeError when the embedded directory is held by a
    process that cannot be reached through POST /sql.
    """
    check_read_only(sql)
    url = settings.resolved_clickhouse_url
    if server_url is None and not url.startswith("chdb://"):  # a ClickHouse server: query it directly
        return run_query(connect(url, readonly_session=True, max_result_rows=settings.sql_max_result_rows), sql)
    if server_url is None and not held_by_another_process(Path(url.removeprefix("chdb://"))):
        try:
            client = connect(url, readonly_session=True, max_result_rows=settings.sql_max_result_rows)
        except Exception as exc:
            if not _locked(exc):  # taken between the check and the open: go through serve
                raise
        else:
            try:
                return run_query(client, sql)
            finally:
                client.close()
    base = server_url or f"http://{settings.host}:{settings.port}"
    token = settings.admin_token.get_secret_value() or _token_file(settings)
    if not token:
        raise RuntimeError(
            f"{url} is held by a running process; set CLICKSTREAM_ADMIN_TOKEN (the one `clickstream serve` "
            "was started with, or write it to <data-dir>/.admin_token) to query it through POST /sql"
        )
    return query_server(base, token, sql)


def query_server(base_url: str, token: str, sql: str) -> dict[str, Any]:
    """Run a read query through a running serve's `POST /sql`; {"columns", "types", "rows"}.

    Raises RuntimeError with the server's message when it refuses the query.
    """
    response = httpx.post(f"{base_url}/sql", content=sql.encode(), timeout=300,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
    body = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"POST /sql {response.status_code} {body.get('error')}: {body.get('message')}")
    result: dict[str, Any] = body
    return result
