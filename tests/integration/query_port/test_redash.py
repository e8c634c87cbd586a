"""Redash's ClickHouse query runner (redash/query_runner/clickhouse.py, getredash/redash master):
`requests.post(url, data=query + "\\nFORMAT JSON", params={user, password, database,
default_format: "JSON"[, session_id, session_check, session_timeout]})`, then r.json()["meta"/"data"].
Multi-statement text is split and run in one session (session_check=0 for the first, 1 after).
Redash uses requests; httpx sends the same request line, parameters and body."""

from __future__ import annotations

from collections import Counter
from typing import Any
from uuid import uuid4

import httpx

from tests.integration.query_port.conftest import PASSWORD, USER, Port


def redash_send(port: Port, data: str, session_id: str | None = None, session_check: bool | None = None,
                timeout: int = 30) -> httpx.Response:
    params: dict[str, Any] = {"user": USER, "password": PASSWORD, "database": "clickstream", "default_format": "JSON"}
    if session_id:
        params["session_id"] = session_id
        params["session_check"] = "1" if session_check else "0"
        params["session_timeout"] = timeout
    return httpx.post(port.url, content=data.encode("utf-8", "ignore"), params=params, timeout=timeout)


def redash_query(port: Port, query: str, session_id: str | None = None,
                 session_check: bool | None = None) -> dict[str, Any]:
    r = redash_send(port, query + "\nFORMAT JSON", session_id, session_check)
    assert r.is_success, r.text
    response: dict[str, Any] = r.json()
    assert "exception" not in response
    return response


def test_redash_query(port: Port, events: list[dict[str, Any]]) -> None:
    response = redash_query(port, "SELECT channel, count() AS hits, sum(revenue) AS revenue FROM events "
                                  "GROUP BY channel")
    assert [m["name"] for m in response["meta"]] == ["channel", "hits", "revenue"]
    assert [m["type"] for m in response["meta"]] == ["LowCardinality(String)", "UInt64", "Decimal(38, 2)"]
    # Redash turns UInt64 strings back into ints itself (ClickHouse quotes 64-bit integers in JSON
    # only with output_format_json_quote_64bit_integers=1, off by default since 24.x).
    assert {row["channel"]: int(row["hits"]) for row in response["data"]} == Counter(e["channel"] for e in events)
    assert response["rows"] == len(response["data"])
    assert set(response["statistics"]) == {"elapsed", "rows_read", "bytes_read"}


def test_redash_schema_query(port: Port) -> None:
    response = redash_query(port, "SELECT database, table, name FROM system.columns WHERE database NOT IN ('system')")
    tables = {(row["database"], row["table"]) for row in response["data"]}
    assert ("clickstream", "v_daily") in tables and ("clickstream", "events") in tables


def test_redash_multi_statement_in_a_session(port: Port) -> None:
    session_id = f"redash_{uuid4().hex}"
    redash_query(port, "SELECT 1", session_id, session_check=False)
    response = redash_query(port, "SELECT currentDatabase() AS db", session_id, session_check=True)
    assert response["data"] == [{"db": "clickstream"}]


def test_redash_sees_errors_as_text(port: Port) -> None:
    r = redash_send(port, "SELECT * FROM nope\nFORMAT JSON")
    assert not r.is_success  # Redash raises Exception(r.text): the text must be ClickHouse's message
    assert r.text.startswith("Code: 60. DB::Exception:") and "(UNKNOWN_TABLE)" in r.text
