"""deploy/grafana: the provisioned data source points the official ClickHouse plugin at the query port
in HTTP mode, and every panel of the dashboard runs against a real `clickstream serve`, its macros
expanded the way the plugin expands them, read the way the plugin reads (Native at clickhouse-go's
protocol revision), returning rows with the expected columns and the ground truth's numbers.

Macro expansion follows grafana/clickhouse-datasource pkg/macros/macros.go (v4): $__timeFilter(c) ->
`c >= toDateTime(from) AND c <= toDateTime(to)` (Unix seconds), $__timeFilter_ms(c) with
fromUnixTimestamp64Milli, $__dateFilter(c) -> `c >= toDate('YYYY-MM-DD') AND c <= toDate(...)`,
$__dateTimeFilter(d, t) / $__dt, $__fromTime / $__toTime (+ _ms), $__timeInterval(c) ->
`toStartOfInterval(toDateTime(c), INTERVAL <interval s> second)`, $__timeInterval_ms, $__interval_s;
dashboard variables (`${site}`) are replaced by Grafana before the plugin sees the query.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.integration.query_port.conftest import SERVE_PASSWORD, Served
from tests.integration.query_port.test_grafana import GrafanaHTTP

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "clickstream.json").read_text())
INTERVAL_S = 3600

#: Columns each panel must return (in this order).
EXPECTED_COLUMNS = {
    "Visitors, sessions, page views, bounce rate": ["visitors", "sessions", "pageviews", "bounce_rate"],
    "Traffic per day": ["time", "visitors", "sessions", "pageviews"],
    "Sessions over time": ["time", "sessions", "visitors"],
    "Channels and campaigns": ["channel", "utm_source", "utm_medium", "utm_campaign", "sessions", "visitors", "leads",
                               "conversion_rate"],
    "Landing pages and conversion": ["landing_path", "sessions", "visitors", "leads", "conversion_rate"],
    "Experiments: lift and 95% interval": ["experiment_id", "variant_id", "is_control", "visitors", "converters",
                                           "conversion_rate", "lift", "ci95_low", "ci95_high", "p_value"],
    "Recent leads": ["lead_id", "occurred_at", "sessions", "first_landing_path", "first_channel", "last_channel"],
}


class TimeRange:
    """A dashboard time range and interval, as the plugin's query.TimeRange / query.Interval."""

    def __init__(self, start: dt.datetime, stop: dt.datetime, interval_s: int) -> None:
        self.start, self.stop, self.interval_s = start, stop, interval_s

    def macros(self) -> dict[str, Callable[[list[str]], str]]:
        def seconds(t: dt.datetime) -> str:
            return f"toDateTime({int(t.timestamp())})"

        def millis(t: dt.datetime) -> str:
            return f"fromUnixTimestamp64Milli({int(t.timestamp() * 1000)})"

        def date(t: dt.datetime) -> str:
            return f"toDate('{t.strftime('%Y-%m-%d')}')"

        def between(fmt: Callable[[dt.datetime], str]) -> Callable[[list[str]], str]:
            def expand(args: list[str]) -> str:
                (column,) = args
                return f"{column} >= {fmt(self.start)} AND {column} <= {fmt(self.stop)}"
            return expand

        def date_time(args: list[str]) -> str:
            day, time = args
            return (f"({day} >= {date(self.start)} AND {day} <= {date(self.stop)}) AND "
                    f"({time} >= {seconds(self.start)} AND {time} <= {seconds(self.stop)})")

        interval = max(self.interval_s, 1)
        return {
            "fromTime": lambda _: seconds(self.start), "toTime": lambda _: seconds(self.stop),
            "fromTime_ms": lambda _: millis(self.start), "toTime_ms": lambda _: millis(self.stop),
            "timeFilter": between(seconds), "timeFilter_ms": between(millis), "dateFilter": between(date),
            "dateTimeFilter": date_time, "dt": date_time,
            "timeInterval": lambda a: f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {interval} second)",
            "timeInterval_ms": lambda a: (f"toStartOfInterval(toDateTime64({a[0]}, 3), "
                                          f"INTERVAL {interval * 1000} millisecond)"),
            "interval_s": lambda _: str(interval),
        }


def expand(sql: str, time_range: TimeRange, variables: dict[str, str]) -> str:
    """The SQL the plugin sends for a panel: variables, then every `$__name` or `$__name(args)` macro
    (arguments split on top-level commas, trimmed)."""
    for name, value in variables.items():
        sql = sql.replace("${" + name + "}", value).replace("$" + name, value)
    macros = time_range.macros()
    out, pos = [], 0
    for match in re.finditer(r"\$__(\w+)", sql):
        if match.start() < pos:
            continue
        name, end, args = match.group(1), match.end(), []
        if end < len(sql) and sql[end] == "(":
            depth, close = 0, end
            for close in range(end, len(sql)):
                depth += {"(": 1, ")": -1}.get(sql[close], 0)
                if depth == 0:
                    break
            args = [a.strip() for a in _split_top_level(sql[end + 1:close])]
            end = close + 1
        if name not in macros:
            raise AssertionError(f"macro $__{name} is not one the plugin knows")
        out += [sql[pos:match.start()], macros[name](args)]
        pos = end
    return "".join([*out, sql[pos:]])


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current] if current or parts else []


def test_datasource_provisioning_points_at_the_query_port() -> None:
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickstream.yaml").read_text())
    (source,) = config["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource" and source["uid"] == "clickstream"
    assert source["jsonData"]["protocol"] == "http"
    assert (source["jsonData"]["username"], source["jsonData"]["defaultDatabase"]) == ("dashboards", "clickstream")
    assert source["jsonData"]["port"] == "${CLICKSTREAM_SQL_PORT}"
    assert source["secureJsonData"]["password"] == "${CLICKSTREAM_SQL_PASSWORD}"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "clickstream.yaml").read_text())
    assert providers["providers"][0]["type"] == "file"


def test_every_panel_uses_the_datasource_and_a_known_view() -> None:
    assert {p["title"] for p in DASHBOARD["panels"]} == set(EXPECTED_COLUMNS)
    for panel in DASHBOARD["panels"]:
        (target,) = panel["targets"]
        assert target["datasource"]["uid"] == "clickstream" and target["editorType"] == "sql"
        assert re.search(r"\bFROM v_\w+", target["rawSql"]), panel["title"]
        assert "'${site}'" in target["rawSql"], panel["title"]


@pytest.fixture(scope="module")
def grafana(served: Served) -> GrafanaHTTP:
    return GrafanaHTTP(served.server.sql_url, SERVE_PASSWORD)


@pytest.fixture(scope="module")
def panels(served: Served, grafana: GrafanaHTTP) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every panel's (columns, rows) over a time range covering the generated traffic."""
    days = sorted(served.truth.daily_traffic())
    start = dt.datetime.fromisoformat(days[0]).replace(tzinfo=dt.UTC)
    stop = dt.datetime.fromisoformat(days[-1]).replace(tzinfo=dt.UTC) + dt.timedelta(days=1, seconds=-1)
    time_range = TimeRange(start, stop, INTERVAL_S)
    variable = DASHBOARD["templating"]["list"][0]
    sites = [row[0] for row in grafana.query(variable["query"])]
    assert served.site in sites
    return {panel["title"]: grafana.frame(expand(panel["targets"][0]["rawSql"], time_range, {"site": served.site}))
            for panel in DASHBOARD["panels"]}


def test_every_panel_returns_rows_with_the_expected_columns(
        panels: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> None:
    for title, (columns, rows) in panels.items():
        assert columns == EXPECTED_COLUMNS[title], title
        assert rows, title


def test_panel_numbers_equal_the_ground_truth(served: Served,
                                              panels: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> None:
    truth = served.truth
    human = truth.human_sessions()
    (stat,) = panels["Visitors, sessions, page views, bounce rate"][1]
    assert stat[:3] == (len({s["anonymous_id"] for s in human}), len(human), sum(s["pageviews"] for s in human))
    assert stat[3] == pytest.approx(sum(s["is_bounce"] for s in human) / len(human), abs=1e-12)
    daily = {t.date().isoformat(): (v, s, p) for t, v, s, p in panels["Traffic per day"][1]}
    assert daily == {d: (w["visitors"], w["sessions"], w["pageviews"]) for d, w in truth.daily_traffic().items()}
    assert sum(row[1] for row in panels["Sessions over time"][1]) == len(human)
    landing = {row[0]: row[1:4] for row in panels["Landing pages and conversion"][1]}
    assert landing == {p: (w["sessions"], w["visitors"], w["leads"]) for p, w in truth.landing_pages().items()}
    lift = {(row[0], row[1]): (row[3], row[4]) for row in panels["Experiments: lift and 95% interval"][1]}
    assert lift == {k: (w["visitors"], w["converters"]) for k, w in truth.variant_counts().items()}
    leads = panels["Recent leads"][1]
    assert len(leads) == min(50, len(truth.traffic.leads))
    assert {row[0] for row in leads} <= {lead.lead_id for lead in truth.traffic.leads}


def test_macro_expansion_matches_the_plugins_examples() -> None:
    time_range = TimeRange(dt.datetime(2022, 10, 21, tzinfo=dt.UTC), dt.datetime(2022, 10, 23, 1, tzinfo=dt.UTC), 60)
    assert expand("$__timeFilter(ts)", time_range, {}) == (
        "ts >= toDateTime(1666310400) AND ts <= toDateTime(1666486800)")
    assert expand("$__dateFilter(day)", time_range, {}) == "day >= toDate('2022-10-21') AND day <= toDate('2022-10-23')"
    assert expand("$__timeInterval(t) x $__interval_s", time_range, {}) == (
        "toStartOfInterval(toDateTime(t), INTERVAL 60 second) x 60")
    assert expand("$__fromTime_ms AND $__toTime", time_range, {}) == (
        "fromUnixTimestamp64Milli(1666310400000) AND toDateTime(1666486800)")
