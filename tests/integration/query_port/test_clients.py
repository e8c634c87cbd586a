"""Real clients that no one here wrote, against a real `clickstream serve`: each reads every `v_*` view
through the query port and gets the numbers of the independent computation (load.model.Truth) over
the same events; errors come back in ClickHouse's shape with the right code.

Clients: clickhouse-connect's HTTP client (query, query_df, query_arrow, parameter binding), its
SQLAlchemy dialect (`clickhousedb://`, what Superset uses: inspect, pandas.read_sql), the official
Node client `@clickhouse/client` run by `node`, and plain HTTP the way Redash calls (FORMAT JSON).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
import re
import shutil
import socket
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import clickhouse_connect
import httpx
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from load.audit import view_problems
from tests.conftest import ROOT, wait_for
from tests.integration.query_port.conftest import SERVE_PASSWORD, USER, Served

Rows = list[dict[str, Any]]
RowsQuery = Callable[[str], Rows]
NODE_DIR = ROOT / "tests" / "node"
ERROR_BODY = re.compile(r"^Code: (\d+)\. DB::Exception: .+ \(([A-Z_]+)\) \(version [0-9.]+\)\n$", re.DOTALL)
CONTRACT_VIEWS = {"v_sessions", "v_daily_traffic", "v_landing_pages", "v_channels", "v_variant_lift"}
PARAMETERIZED_VIEWS = {"v_funnel", "v_funnel_sessions"}


def plain(value: Any) -> Any:
    """A pandas/numpy value as plain Python: NaN/NaT -> None, a midnight Timestamp -> date (a Date column)."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        stamp = value.to_pydatetime()
        return stamp.date() if value == value.normalize() else stamp
    return value.item() if hasattr(value, "item") else value


def frame_rows(frame: pd.DataFrame) -> Rows:
    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def view_names(served: Served) -> list[str]:
    with served.client() as client:
        names = client.query("SELECT name FROM system.tables WHERE database = 'clickstream' AND engine = 'View' "
                             "AND startsWith(name, 'v_') ORDER BY name").result_rows
    return [str(n) for (n,) in names]


def call(view: str, site: str) -> str:
    """How a query names `view`: a parameterized view (sql/0102_range_views.sql, 0110) with its parameters,
    over all time."""
    if view in PARAMETERIZED_VIEWS:  # the funnels (sql/0110_dashboard_views.sql)
        return (f"{view}(site_id = '{site}', steps = ['/'], window_s = 3600, from = '2000-01-01 00:00:00', "
                "to = '2100-01-01 00:00:00')")
    return f"{view}(site = '{site}', from = '2000-01-01', to = '2149-01-01')" if view.endswith("_range") else view


def lead_sessions_expected(served: Served) -> dict[tuple[str, str], dict[str, Any]]:
    """v_lead_sessions from the ground truth: every session of the visitor behind each lead."""
    by_visitor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for session in served.truth.sessions().values():
        by_visitor[session["anonymous_id"]].append(session)
    return {(lead.lead_id, s["session_id"]): {"entry_path": s["entry_path"], "channel": s["channel"],
                                              "before_lead": int(s["started_at"] <= lead.occurred_at_ms)}
            for lead in served.truth.traffic.leads for s in by_visitor[lead.anonymous_id]}


def check_every_view(served: Served, query: RowsQuery) -> list[str]:
    """Differences between what `query` reads from the views and the ground truth (empty = equal)."""
    problems = view_problems(query, served.truth)
    site = served.site
    got = {(r["lead_id"], r["session_id"]): {"entry_path": r["entry_path"], "channel": r["channel"],
                                             "before_lead": int(r["before_lead"])}
           for r in query(f"SELECT * FROM v_lead_sessions WHERE site_id = '{site}'")}
    want = lead_sessions_expected(served)
    if got != want:
        problems.append(f"v_lead_sessions: {len(set(got) ^ set(want))} rows differ, "
                        f"e.g. {sorted(set(got) ^ set(want))[:3]} or {[k for k in want if got.get(k) != want[k]][:3]}")
    for view in view_names(served):  # views the checks above do not know yet are at least readable
        if view not in CONTRACT_VIEWS | {"v_lead_sessions"} and not query(f"SELECT * FROM {call(view, site)} LIMIT 5"):
            problems.append(f"{view}: no rows")
    return problems


@pytest.fixture(scope="module")
def connect_client(served: Served) -> Iterator[Client]:
    client = served.client()
    yield client
    client.close()


# -- clickhouse-connect's HTTP client ------------------------------------------------------------


def test_clickhouse_connect_query_reads_every_view_exactly(served: Served, connect_client: Client) -> None:
    def query(sql: str) -> Rows:
        result = connect_client.query(sql)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    assert len(served.truth.traffic.leads) > 0
    assert check_every_view(served, query) == []
    assert connect_client.protocol_version == 54405  # the Native probe passed: BlockInfo framing is right


def test_clickhouse_connect_query_df_and_query_arrow(served: Served, connect_client: Client) -> None:
    assert check_every_view(served, lambda sql: frame_rows(connect_client.query_df(sql))) == []
    table = connect_client.query_arrow(f"SELECT * FROM v_daily_traffic WHERE site_id = '{served.site}'")
    assert isinstance(table, pa.Table)
    assert check_every_view(served, lambda sql: connect_client.query_arrow(sql).to_pylist()) == []


def test_clickhouse_connect_parameter_binding(served: Served, connect_client: Client) -> None:
    daily = served.truth.daily_traffic()
    first, last = min(daily), max(daily)
    result = connect_client.query(
        "SELECT day, visitors, sessions, pageviews FROM v_daily_traffic WHERE site_id = {site:String} "
        "AND day BETWEEN {start:Date} AND {stop:Date} ORDER BY day",
        parameters={"site": served.site, "start": dt.date.fromisoformat(first), "stop": dt.date.fromisoformat(last)})
    assert {d.isoformat(): (v, s, p) for d, v, s, p in result.result_rows} == {
        day: (w["visitors"], w["sessions"], w["pageviews"]) for day, w in daily.items()}
    tricky = "tab\there 'quote' back\\slash € \\N"
    assert connect_client.query("SELECT {s:String}", parameters={"s": tricky}).result_rows == [(tricky,)]


# -- the SQLAlchemy dialect (Superset) -------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(served: Served) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"clickhousedb://{USER}:{SERVE_PASSWORD}@127.0.0.1:{served.sql_port}/clickstream")
    yield engine
    engine.dispose()


def test_sqlalchemy_inspect_lists_tables_and_every_view(served: Served, engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    views = set(view_names(served))
    assert CONTRACT_VIEWS | {"v_lead_sessions"} <= views
    assert views <= set(inspector.get_view_names())
    assert {"events", "sessions", "lead_events"} <= set(inspector.get_table_names())
    for view in views:  # plain types only: BI tools hide AggregateFunction columns
        # parameterized: described by a call (DESCRIBE needs the parameters)
        if view.endswith("_range") or view in PARAMETERIZED_VIEWS:
            with engine.connect() as conn:
                types = [str(r[1]) for r in conn.execute(sa.text(f"DESCRIBE (SELECT * FROM {call(view, 'x')})"))]
            assert types and not [t for t in types if "AggregateFunction" in t], view
            continue
        columns = inspector.get_columns(view)
        assert columns and not [c for c in columns if "AggregateFunction" in str(c["type"])], view


def test_sqlalchemy_pandas_read_sql_reads_every_view_exactly(served: Served, engine: sa.Engine) -> None:
    with engine.connect() as conn:
        assert check_every_view(served, lambda sql: frame_rows(pd.read_sql(sa.text(sql), conn))) == []
        frame = pd.read_sql(sa.text("SELECT landing_path, leads FROM v_landing_pages WHERE site_id = :site"), conn,
                            params={"site": served.site})
    assert dict(zip(frame["landing_path"], frame["leads"], strict=True)) == {
        path: row["leads"] for path, row in served.truth.landing_pages().items()}


# -- the official Node client ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_modules() -> None:
    """`npm ci` from the committed package.json + package-lock.json (once; node_modules is ignored)."""
    assert shutil.which("node") and shutil.which("npm"), "Node.js and npm are needed (make system installs them)"
    if not (NODE_DIR / "node_modules" / "@clickhouse" / "client").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True,
                       timeout=600, capture_output=True)


def test_node_client_reads_every_view_exactly(served: Served, node_modules: None) -> None:
    recorded: list[str] = []

    def record(sql: str) -> Rows:
        recorded.append(sql)
        return []

    check_every_view(served, record)  # the SQL the checks send; the Node client then runs each one
    request = {"url": served.server.sql_url, "username": USER, "password": SERVE_PASSWORD, "queries": recorded,
               "site": served.site}
    done = subprocess.run(["node", "client_test.js"], cwd=NODE_DIR, input=json.dumps(request), capture_output=True,
                          text=True, timeout=300, check=False, env={**os.environ})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["ping"]["success"] is True
    assert check_every_view(served, lambda sql: report["results"][sql]) == []
    assert report["lastHeaders"]["format"] == "JSONEachRow" and report["lastHeaders"]["encoding"] == "gzip"
    daily = served.truth.daily_traffic()
    assert {r["day"]: (r["visitors"], r["sessions"]) for r in report["bound"]} == {
        d: (w["visitors"], w["sessions"]) for d, w in daily.items()}
    for key, code, kind in (("insert", "164", "READONLY"), ("fileFunction", "497", "ACCESS_DENIED"),
                            ("wrongPassword", "516", "AUTHENTICATION_FAILED")):
        error = report[key]["error"]
        assert error is not None, key
        assert (error["isClickHouseError"], error["code"], error["type"]) == (True, code, kind), (key, error)


# -- plain HTTP, as Redash calls (redash/query_runner/clickhouse.py) --------------------------------


def redash(served: Served, sql: str, **params: str) -> httpx.Response:
    return httpx.post(served.server.sql_url, content=(sql + "\nFORMAT JSON").encode(), timeout=60,
                      params={"user": USER, "password": SERVE_PASSWORD, "database": "clickstream",
                              "default_format": "JSON", **params})


def test_redash_style_requests_read_every_view_exactly(served: Served) -> None:
    def query(sql: str) -> Rows:
        response = redash(served, sql)
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["rows"] == len(doc["data"])
        assert all(list(row) == [m["name"] for m in doc["meta"]] for row in doc["data"])
        rows: Rows = doc["data"]
        return rows

    assert check_every_view(served, query) == []
    failed = redash(served, "SELECT * FROM nope")
    assert failed.status_code == 404 and failed.text.startswith("Code: 60. DB::Exception:")


# -- errors through a real serve: ClickHouse's shape and code ---------------------------------------


def post(served: Served, sql: str, auth: tuple[str, str] = (USER, SERVE_PASSWORD), **params: str) -> httpx.Response:
    return httpx.post(served.server.sql_url, content=sql.encode(), auth=auth, params=params, timeout=60)


def assert_error(response: httpx.Response, status: int, code: int, name: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-clickhouse-exception-code"] == str(code)
    match = ERROR_BODY.match(response.text)
    assert match and match.groups() == (str(code), name), response.text


@pytest.mark.parametrize("sql", ["INSERT INTO events (site_id) VALUES ('x')", "DROP TABLE events",
                                 "ALTER TABLE events DELETE WHERE 1", "KILL QUERY WHERE 1"])
def test_a_write_is_refused(served: Served, sql: str) -> None:
    assert_error(post(served, sql), 500, 164, "READONLY")
    with served.client() as client:
        assert client.command("SELECT count() FROM events WHERE site_id = 'x'") == 0


@pytest.mark.parametrize("sql", ["SELECT * FROM file('/etc/passwd', 'LineAsString')", "SELECT file('/etc/passwd')",
                                 "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')"])
def test_a_table_function_is_refused(served: Served, sql: str) -> None:
    response = post(served, sql)
    assert_error(response, 403, 497, "ACCESS_DENIED")
    assert "root:" not in response.text


def test_a_wrong_password_is_refused(served: Served) -> None:
    assert_error(post(served, "SELECT 1", auth=(USER, "wrong")), 403, 516, "AUTHENTICATION_FAILED")
    with pytest.raises(DatabaseError) as raised:
        clickhouse_connect.get_client(host="127.0.0.1", port=served.sql_port, username=USER, password="nope")
    assert raised.value.code == 516


HEAVY = "SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) % 7 = 1"


def test_an_over_long_query_is_stopped(served: Served) -> None:
    assert_error(post(served, HEAVY, max_execution_time="1"), 408, 159, "TIMEOUT_EXCEEDED")
    assert_error(post(served, "SELECT 1", max_execution_time="3600"), 500, 452, "SETTING_CONSTRAINT_VIOLATION")
    too_big = "SELECT 1 -- " + "x" * (256 * 1024)
    assert_error(post(served, too_big), 400, 62, "SYNTAX_ERROR")


def gauge(served: Served, name: str) -> float:
    text = served.server.client().get("/metrics").text
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else -1.0


def test_too_many_concurrent_queries_get_503_with_retry_after(served: Served) -> None:
    """serve runs with CLICKSTREAM_SQL_MAX_CONCURRENT_QUERIES=1 and no queue: while one heavy query
    runs, the next is refused; a client that goes away has its query killed and its slot freed."""
    holder = socket.create_connection(("127.0.0.1", served.sql_port))
    auth = "Basic " + base64.b64encode(f"{USER}:{SERVE_PASSWORD}".encode()).decode()
    body = HEAVY.encode()
    holder.sendall(b"POST /?max_execution_time=25 HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth.encode()
                   + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        wait_for(lambda: gauge(served, "clickstream_sql_running") == 1, 30, "the heavy query to hold the slot")
        refused = post(served, "SELECT 1")
        assert_error(refused, 503, 202, "TOO_MANY_SIMULTANEOUS_QUERIES")
        assert refused.headers["retry-after"] == "1"
    finally:
        holder.close()  # the port sees the disconnect and kills the query
    wait_for(lambda: gauge(served, "clickstream_sql_running") == 0, 30, "the slot to be freed")
    assert gauge(served, "clickstream_sql_cancelled_total") >= 1
    assert post(served, "SELECT 1").text == "1\n"
