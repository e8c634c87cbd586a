"""Roll-ups partitioned by day (as sql/0101_rollups.sql makes them) vs by month: the dashboard view
queries on both, same data, same run, interleaved.

Why: a dashboard question for a range reads one part per day of the range from `traffic_daily`,
`landing_daily` and `channel_daily` (`PARTITION BY day`, so that the fold can swap a day in with
`REPLACE PARTITION`, reports/fold.py). This measures what that costs against the same rows in monthly
partitions merged to one part each (`OPTIMIZE … FINAL`): the best case of a month-partitioned design, in
which the fold would copy the month, delete the day and insert it again before the swap. Nothing in the
product reads the month copies; the benchmark exchanges them with the roll-ups (`EXCHANGE TABLES`) between
rounds, so the views' own SQL runs on both.

Method: embedded ClickHouse (chDB), full schema, the events of load/bench_views.py (N events, 90 days, 3
sites, generated inside ClickHouse so the materialized views run, then one full fold). For the largest
site and the last 7 days, the last 30 days and all time: each view query of load/bench_views.py
`QUERIES` on the views over roll-ups (v_sessions aside: it reads session_facts), ROUNDS rounds, each
form in turn, RUNS timed runs after one warm-up run per query and round; median over all rounds. Also
the fixed costs on the same tables: reading 7 rows (`SELECT sessions FROM traffic_daily WHERE … ORDER BY day`
for 7 days), its plan alone (`EXPLAIN`), `v_daily_traffic`'s and `v_traffic_range`'s 7-day queries written on
`traffic_daily` without the view, and `SELECT 1`. The answers of both forms are compared (must be equal; not for
the plan).

Command: `python -m load.bench partitions` (1 M events) or `python -m load.bench_partitions 10000000`.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from load.bench_views import DAYS, QUERIES, SITE, load_history, ranges
from load.results import write_result
from reports.fold import fold

#: The roll-ups the range views read (sql/rollup_views.sql).
TABLES = ("traffic_daily", "landing_daily", "channel_daily")
MONTH_SUFFIX = "_by_month"
ROUNDS = 3
ACTIVE_PARTS = ("SELECT count() FROM system.parts WHERE active AND database = currentDatabase() "
                "AND table = {table:String}")
RUNS = 9


def month_copies(client: Client) -> dict[str, int]:
    """Create `<table>_by_month` for each of TABLES: the same columns, engine, key and rows, `PARTITION BY
    toYYYYMM(day)`, merged to one part per month. Returns table -> active parts of its copy."""
    parts: dict[str, int] = {}
    for table in TABLES:
        ddl = str(client.query(f"SHOW CREATE TABLE {table}").result_rows[0][0])
        if "\nPARTITION BY day\n" not in ddl:
            raise RuntimeError(f"{table} is not partitioned by day:\n{ddl}")
        copy = table + MONTH_SUFFIX
        client.command(f"DROP TABLE IF EXISTS {copy} SYNC")
        client.command(ddl.replace(f".{table}\n", f".{copy}\n", 1)
                          .replace("\nPARTITION BY day\n", "\nPARTITION BY toYYYYMM(day)\n"))
        client.command(f"INSERT INTO {copy} SELECT * FROM {table}", settings=INSERT_SETTINGS)
        client.command(f"OPTIMIZE TABLE {copy} FINAL")
        for name in (copy, table):
            parts[name] = int(client.query(ACTIVE_PARTS, parameters={"table": name}).result_rows[0][0])
    return parts


def _exchange(client: Client) -> None:
    for table in TABLES:
        client.command(f"EXCHANGE TABLES {table} AND {table}{MONTH_SUFFIX}")


def _timed(client: Client, sql: str) -> tuple[list[float], list[tuple[Any, ...]]]:
    rows = [tuple(r) for r in client.query(sql).result_rows]  # warm-up
    times: list[float] = []
    for _ in range(RUNS):
        started = time.perf_counter()
        client.query(sql)
        times.append((time.perf_counter() - started) * 1000)
    return times, rows


def measure(client: Client, queries: dict[str, str]) -> dict[str, Any]:
    """name -> {day_median_ms, month_median_ms, day_over_month, same_answer} over ROUNDS interleaved rounds
    (the form measured first alternates)."""
    times: dict[tuple[str, str], list[float]] = {}
    answers: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    month_in_place = False
    for round_ in range(ROUNDS):
        for form in ("day", "month") if round_ % 2 == 0 else ("month", "day"):
            if (form == "month") != month_in_place:
                _exchange(client)
                month_in_place = not month_in_place
            for name, sql in queries.items():
                took, rows = _timed(client, sql)
                times.setdefault((name, form), []).extend(took)
                answers[(name, form)] = rows
    if month_in_place:
        _exchange(client)
    out: dict[str, Any] = {}
    for name in queries:
        day, month = statistics.median(times[(name, "day")]), statistics.median(times[(name, "month")])
        out[name] = {"day_median_ms": round(day, 2), "month_median_ms": round(month, 2),
                     "day_over_month": round(day / month, 2),
                     # a plan is no answer: it names the parts' layout, not the rows
                     "same_answer": (None if queries[name].startswith("EXPLAIN")
                                     else answers[(name, "day")] == answers[(name, "month")])}
    return out


def run_size(n_events: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-partitions-"))
    try:
        client = connect(f"chdb://{work / 'clickhouse'}")
        migrate(client)
        first_day, today = load_history(client, n_events)
        fold(client)
        parts = month_copies(client)
        measured = ranges(first_day, today)
        queries: dict[str, str] = {}
        for view, on_view, _ in QUERIES:
            if view == "v_sessions":
                continue
            for label, (first, last) in measured.items():
                queries[f"{view} {label}"] = on_view.format(site=SITE, first=first, last=last)
        first, last = measured["7d"]
        queries["7 rows of traffic_daily"] = (f"SELECT sessions FROM traffic_daily WHERE site_id = '{SITE}' "
                                              f"AND day BETWEEN '{first}' AND '{last}' ORDER BY day")
        queries["v_daily_traffic 7d, the same SELECT on traffic_daily (no view)"] = (
            f"SELECT day, groupBitmapMerge(visitor_bitmap) AS visitors, sum(sessions) AS sessions, sum(pageviews), "
            f"round(sum(bounces) / sessions, 9) FROM traffic_daily WHERE site_id = '{SITE}' "
            f"AND day BETWEEN '{first}' AND '{last}' GROUP BY site_id, day ORDER BY day")
        queries["v_traffic_range 7d, the same SELECT on traffic_daily (no parameterized view)"] = (
            f"SELECT groupBitmapMerge(visitor_bitmap), sum(sessions), sum(pageviews), sum(engaged_sessions) "
            f"FROM traffic_daily WHERE site_id = '{SITE}' AND day >= '{first}' AND day <= '{last}'")
        queries["EXPLAIN of the 7-row read (plan only)"] = "EXPLAIN " + queries["7 rows of traffic_daily"]
        queries["SELECT 1"] = "SELECT 1"
        result = {"events": n_events, "active_parts": parts, "queries": measure(client, queries)}
        client.close()
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(result: dict[str, Any]) -> str:
    lines = ["| query | by day, median ms | by month (merged), median ms | day ÷ month | answers equal |",
             "| --- | ---: | ---: | ---: | --- |"]
    for name, row in result["queries"].items():
        lines.append(f"| {name} | {row['day_median_ms']} | {row['month_median_ms']} | {row['day_over_month']} | "
                     f"{ {True: 'yes', False: 'NO', None: 'n/a'}[row['same_answer']] } |")
    return "\n".join(lines)


def run(n_events: int = 1_000_000) -> dict[str, Any]:
    result = {"benchmark": "partitions", "engine": "chDB (embedded ClickHouse)", "site": SITE, "days": DAYS,
              "rounds": ROUNDS, "runs": RUNS, **run_size(n_events)}
    out = write_result("partitions", result)
    print(markdown(result))
    return out


if __name__ == "__main__":
    import sys

    run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
