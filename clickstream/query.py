"""Where `clickstream sql` runs a query: a server URL, the embedded directory, or a running serve."""

from __future__ import annotations

from typing import Any

import httpx

from clickstream.settings import Settings
from clickstream.sqlapi import check_read_only, run_query
from flusher.clickhouse import connect


def _locked(exc: BaseException) -> bool:
    text = str(exc)
    return "Cannot lock file" in text or "Unable to open the chdb engine" in text


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
    if server_url is None and url.startswith("chdb://"):
        try:
            client = connect(url, readonly_session=True, max_result_rows=settings.sql_max_result_rows)
        except Exception as exc:
            if not _locked(exc):
                raise
        else:
            return run_query(client, sql)
    elif server_url is None:
        return run_query(connect(url, readonly_session=True, max_result_rows=settings.sql_max_result_rows), sql)
    base = server_url or f"http://{settings.host}:{settings.port}"
    token = settings.admin_token or _token_file(settings)
    if not token:
        raise RuntimeError(
            f"{url} is held by a running process; set CLICKSTREAM_ADMIN_TOKEN (the one `clickstream serve` "
            "was started with, or write it to <data-dir>/.admin_token) to query it through POST /sql"
        )
    response = httpx.post(f"{base}/sql", content=sql.encode(), timeout=300,
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
    body = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code} {body.get('error')}: {body.get('message')}")
    result: dict[str, Any] = body
    return result
