"""Grafana's ClickHouse data source (grafana/clickhouse-datasource 4.20, pkg/plugin/driver.go) in HTTP
mode, emulated request for request. The plugin opens clickhouse-go v2.47 with Protocol HTTP and
Compression GZIP; clickhouse-go (conn_http.go, conn_http_query.go) then sends, for every query:

    POST /?database=<db>&<plugin settings, e.g. limit>&default_format=Native&client_protocol_version=54460
    Authorization: Basic ...          (URL userinfo, no TLS)
    Accept-Encoding: gzip             (no enable_http_compression parameter: the server decides)
    User-Agent: grafana/<v> clickhouse-datasource/<v> clickhouse-go/2.47.0 (<comments>; lv:go/1.25; os:linux)
    body: the query text

and decodes the Native body with revision 54460 for its first query ("SELECT displayName(), version(),
revision(), timezone()") and with the server's revision() afterwards: a BlockInfo before every block and
a custom-serialization byte after every column type (lib/proto/block.go). A server that ignores
client_protocol_version, as chDB does by itself, breaks every Grafana panel in HTTP mode.
"""

from __future__ import annotations

import gzip
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.integration.query_port.conftest import PASSWORD, USER, Port
from tests.integration.query_port.native_reader import NativeReader

CLIENT_TCP_PROTOCOL_VERSION = 54460  # clickhouse-go lib/proto/const.go DBMS_TCP_PROTOCOL_VERSION
USER_AGENT = ("grafana/12.2.0 clickhouse-datasource/4.20.0 clickhouse-go/2.47.0 "
              "(grafana_user:admin; grafana_dashboard:abc; grafana_panel:2; lv:go/1.25.4; os:linux)")


class GrafanaHTTP:
    """clickhouse-go's httpConnect, reduced to what the plugin uses."""

    def __init__(self, base_url: str, password: str = PASSWORD, settings: dict[str, str] | None = None) -> None:
        self.url = base_url + "/"
        self.password = password
        self.params = {"database": "clickstream", **(settings or {}), "default_format": "Native",
                       "client_protocol_version": str(CLIENT_TCP_PROTOCOL_VERSION)}
        self.revision = CLIENT_TCP_PROTOCOL_VERSION  # preflight, then the server's revision()
        self.seen_headers: list[httpx.Headers] = []
        hello = self.query("SELECT displayName(), version(), revision(), timezone()")
        self.display_name, self.version, self.revision, self.timezone = hello[0]

    def raw(self, sql: str) -> httpx.Response:
        return httpx.post(self.url, params=self.params, content=sql.encode(), auth=(USER, self.password),
                          headers={"Accept-Encoding": "gzip", "User-Agent": USER_AGENT}, timeout=30)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.frame(sql)[1]

    def frame(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """(column names, rows) as the plugin gets them."""
        r = self.raw(sql)
        if r.status_code != 200:
            raise RuntimeError(f"clickhouse [execute]:: {r.status_code} code: {r.text}")
        self.seen_headers.append(r.headers)
        assert r.headers["content-encoding"] == "gzip"  # httpx inflated it; clickhouse-go's reader does too
        blocks = NativeReader(r.content, self.revision).blocks()
        names = blocks[0][0] if blocks else []
        return names, [row for _, _, columns in blocks for row in zip(*columns, strict=True)]


@pytest.fixture()
def grafana(port: Port) -> GrafanaHTTP:
    return GrafanaHTTP(port.url)


def test_hello_ping_and_schema(grafana: GrafanaHTTP, port: Port) -> None:
    assert grafana.version == port.qp.engine.version and grafana.timezone == port.qp.engine.timezone
    assert grafana.revision > CLIENT_TCP_PROTOCOL_VERSION  # chDB 26.9 reports 54515
    assert grafana.query("SELECT 1") == [(1,)]
    databases = {row[0] for row in grafana.query("SELECT name FROM system.databases")}
    assert "clickstream" in databases
    tables = {row[0] for row in grafana.query("SELECT name FROM system.tables WHERE database = 'clickstream'")}
    assert {"events", "v_daily"} <= tables
    assert grafana.seen_headers[-1]["x-clickhouse-format"] == "Native"


def test_time_series_panel(grafana: GrafanaHTTP, events: list[dict[str, Any]]) -> None:
    # $__timeInterval(ts) and $__timeFilter(ts) as the plugin's macros expand them (pkg/macros).
    sql = ("SELECT toStartOfInterval(ts, INTERVAL 86400 second) AS time, channel, count() AS hits "
           "FROM clickstream.events WHERE ts >= toDateTime(1740787200) AND ts <= toDateTime(1741391999) "
           "GROUP BY time, channel ORDER BY time, channel")
    rows = grafana.query(sql)
    want = Counter((e["ts"][:10], e["channel"]) for e in events
                   if "2025-03-01" <= e["ts"][:10] <= "2025-03-07")
    assert {(t.strftime("%Y-%m-%d"), c): n for t, c, n in rows} == want
    assert all(isinstance(t, datetime) and t.tzinfo == UTC for t, _, _ in rows)


def test_table_panel_with_many_types(grafana: GrafanaHTTP, events: list[dict[str, Any]]) -> None:
    rows = grafana.query("SELECT site_id, ts, path, revenue, tags, referrer, duration_ms FROM clickstream.events "
                         "ORDER BY site_id, ts LIMIT 5")
    expected = sorted(events, key=lambda e: (e["site_id"], e["ts"]))[:5]
    for (site_id, ts, path, revenue, tags, referrer, duration_ms), e in zip(rows, expected, strict=True):
        assert (site_id, path, str(revenue), tags, referrer, duration_ms) == (
            e["site_id"], e["path"], e["revenue"], e["tags"], e["referrer"], e["duration_ms"])
        assert ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] == e["ts"]


def test_row_limit_setting_and_many_blocks(port: Port) -> None:
    # enableRowLimit/rowLimit in the data source: clickhouse-go sends `limit` as a URL setting.
    grafana = GrafanaHTTP(port.url, settings={"limit": "70000", "max_block_size": "10000"})
    rows = grafana.query("SELECT number, toString(number) FROM numbers(90000)")
    assert len(rows) == 70000 and rows[-1] == (69999, "69999")


def test_errors_reach_grafana_as_clickhouse_exceptions(grafana: GrafanaHTTP) -> None:
    # clickhouse-go's newHTTPError parses "Code: N. DB::Exception: ..." and the exception-code header;
    # the plugin marks errors containing "DB::Exception" as downstream (driver.go containsClickHouseException).
    r = grafana.raw("SELECT * FROM clickstream.nope")
    assert r.status_code == 404 and r.headers["x-clickhouse-exception-code"] == "60"
    body = gzip.decompress(r.content) if r.headers.get("content-encoding") == "gzip" else r.content
    assert b"DB::Exception" in body
