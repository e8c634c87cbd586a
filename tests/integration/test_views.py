"""`clickstream serve` end to end over HTTP, and every dashboard view against an independent
computation (load.model.Truth) over the same generated workload."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from clickhouse_connect.driver.client import Client
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from clickstream.core.clickhouse import INSERT_SETTINGS, connect
from clickstream.core.times import ch_datetime
from load.model import ModelConfig, Traffic, Truth, generate
from load.send import post_events
from reports.fold import fold
from tests.conftest import ROOT, Server, start_server

SQL_PASSWORD = "sql-secret"


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return generate(ModelConfig(seed=7, visitors=1000))


Loaded = tuple[Client, Truth, dict[str, Any]]


@pytest.fixture(scope="module")
def loaded(traffic: Traffic, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    """Serve on a free port, the workload POSTed, the query port and `clickstream sql` used while it
    runs, SIGTERM, then the data directory reopened with leads added as the stitcher writes them."""
    data_dir = tmp_path_factory.mktemp("views") / "data"
    server = start_server("serve", data_dir, {"CLICKSTREAM_SQL_PASSWORD": SQL_PASSWORD}, ready_path="/readyz")
    observed: dict[str, Any] = {}
    try:
        assert len(traffic.events) >= 10_000
        observed["accepted"], observed["rejected"] = post_events(server.url, traffic.events)
        observed["invalid"] = post_events(server.url, traffic.invalid)
        observed["live"] = live_queries(server)
    finally:
        observed["exit_code"] = server.stop()
    client = connect(f"chdb://{data_dir / 'clickhouse'}")
    truth = Truth(traffic)
    insert_leads(client, truth)
    fold(client)  # v_variant_lift reads variant_daily: the leads' converters are in after a fold
    yield client, truth, observed
    client.close()


def live_queries(server: Server) -> dict[str, Any]:
    """What a user sees while serve runs: the query port over plain HTTP, and the CLI through it."""
    out: dict[str, Any] = {}
    with httpx.Client(base_url=server.sql_url, auth=("dashboards", SQL_PASSWORD), timeout=60) as http:
        def code(sql: str, **kwargs: Any) -> tuple[int, str]:
            response = http.post("/", content=sql.encode(), **kwargs)
            return response.status_code, response.headers.get("x-clickhouse-exception-code", "")

        out["wrong_password"] = code("SELECT 1", auth=("dashboards", "nope"))
        out["drop"] = code("DROP TABLE events")
        out["sneaky"] = code("SELECT 1 SETTINGS readonly = 0")
        out["insert_via_select"] = code("WITH 1 AS x SELECT * FROM events; INSERT INTO events (site_id) VALUES ('x')")
        out["select"] = http.post("/", content=b"SELECT count() AS n FROM events FORMAT JSON").json()["meta"]

    def cli(*args: str, **env: str) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, "-m", "clickstream.cli", "sql", *args], capture_output=True,
                              env={**os.environ, **server.env, **env}, cwd=ROOT, timeout=120)
        return done.returncode, done.stdout.decode(), done.stderr.decode()[-500:]

    out["cli_json"] = cli("SELECT 42 AS answer", "--format", "json")
    out["cli_table"] = cli("SELECT * FROM (SELECT 'a' AS x, 1 AS y UNION ALL SELECT 'b', 2) ORDER BY x")
    out["cli_write"] = cli("DROP TABLE events")
    out["cli_no_password"] = cli("SELECT 1", CLICKSTREAM_SQL_PASSWORD="")
    (server.data_dir / ".sql_password").write_text(SQL_PASSWORD + "\n")  # what `make run` keeps
    out["cli_password_file"] = cli("SELECT 7 AS seven", "--format", "json", CLICKSTREAM_SQL_PASSWORD="")
    return out


def insert_leads(client: Client, truth: Truth) -> None:
    """lead_created rows with the frozen attribution the stitcher computes (Truth.lead_attribution)."""
    rows = []
    for lead in truth.traffic.leads:
        a = truth.lead_attribution(lead)

        def touch(t: dict[str, Any]) -> dict[str, Any]:
            return {**t, "ts": ch_datetime(t["ts"])}

        rows.append(orjson.dumps({
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, lead.lead_id)),
            "lead_id": lead.lead_id, "site_id": lead.site_id, "anonymous_id": lead.anonymous_id,
            "occurred_at": ch_datetime(lead.occurred_at_ms), "session_id": lead.session_id,
            "landing_path": a["landing_path"], "first_touch": touch(a["first_touch"]),
            "last_touch": touch(a["last_touch"]), "variants": a["variants"], "properties": "{}", "payload": "{}",
            "emitted_at": ch_datetime(lead.occurred_at_ms),
        }))
    client.raw_insert("lead_events", None, b"\n".join(rows), fmt="JSONEachRow",
                      settings={**INSERT_SETTINGS, "insert_deduplication_token": "test-leads"})


def rows(client: Client, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    return [dict(zip(result.column_names, r, strict=True)) for r in result.result_rows]


def ms(value: dt.datetime) -> int:
    return int(value.replace(tzinfo=dt.UTC).timestamp() * 1000) if value.tzinfo is None else int(
        value.timestamp() * 1000)


def test_serve_accepts_flushes_and_exits_cleanly(loaded: Loaded, traffic: Traffic) -> None:
    client, _, observed = loaded
    assert observed["accepted"] == len(traffic.events)
    assert observed["rejected"] == 0
    assert observed["invalid"] == (0, len(traffic.invalid))
    assert observed["exit_code"] == 0
    (count, distinct), = client.query("SELECT count(), uniqExact(event_id) FROM events").result_rows
    assert count == distinct == len(traffic.events)


def test_query_port_and_cli_while_serve_runs(loaded: Loaded) -> None:
    live = loaded[2]["live"]
    assert live["wrong_password"] == (403, "516")
    assert live["drop"] == (500, "164")
    assert live["sneaky"] == (500, "164")
    assert live["insert_via_select"] == (400, "62")  # one statement per query
    assert live["select"] == [{"name": "n", "type": "UInt64"}]
    code, stdout, stderr = live["cli_json"]
    assert code == 0, stderr
    assert orjson.loads(stdout.strip()) == {"answer": 42}
    code, stdout, stderr = live["cli_table"]
    assert code == 0, stderr
    assert stdout.splitlines() == ["x  y", "-  -", "a  1", "b  2", "(2 rows)"]
    code, _, stderr = live["cli_write"]
    assert code == 1 and "Code: 164. DB::Exception" in stderr and "(READONLY)" in stderr
    code, _, stderr = live["cli_no_password"]
    assert code == 1 and "CLICKSTREAM_SQL_PASSWORD" in stderr
    code, stdout, stderr = live["cli_password_file"]
    assert code == 0, stderr
    assert orjson.loads(stdout.strip()) == {"seven": 7}


def test_v_sessions_matches_independent_computation(loaded: Loaded) -> None:
    client, truth, _ = loaded
    expected = truth.sessions()
    got = {r["session_id"]: r for r in rows(client, "SELECT * FROM v_sessions")}
    assert set(got) == set(expected)
    for sid, want in expected.items():
        row = got[sid]
        have = {k: row[k] for k in want if k not in ("started_at", "ended_at", "duration_s")}
        assert have == {k: v for k, v in want.items() if k not in ("started_at", "ended_at", "duration_s")}, sid
        assert ms(row["started_at"]) == want["started_at"]
        assert ms(row["ended_at"]) == want["ended_at"]
        assert row["duration_s"] == pytest.approx(want["duration_s"], abs=1e-9)


def test_v_daily_traffic_matches(loaded: Loaded) -> None:
    client, truth, _ = loaded
    expected = truth.daily_traffic()
    got = {r["day"].isoformat(): r for r in rows(client, "SELECT * FROM v_daily_traffic")}
    assert set(got) == set(expected)
    for day, want in expected.items():
        for key in ("visitors", "sessions", "pageviews"):
            assert got[day][key] == want[key], (day, key)
        assert got[day]["bounce_rate"] == pytest.approx(want["bounce_rate"], abs=1e-12)
        assert got[day]["avg_duration_s"] == pytest.approx(want["avg_duration_s"], abs=1e-9)
        assert got[day]["engaged_sessions"] == want["engaged_sessions"], day
        assert got[day]["engagement_rate"] == pytest.approx(want["engagement_rate"], abs=1e-12)
        assert got[day]["avg_engaged_s"] == pytest.approx(want["avg_engaged_s"], abs=1e-9)


def test_engaged_sessions_follow_ga4_with_both_sides_of_the_10_s_threshold(loaded: Loaded) -> None:
    """The generated traffic holds the cases the bounce rule separates (load.model.ENGAGED_MS)."""
    client, truth, _ = loaded
    sessions = truth.human_sessions()
    one_view = [s for s in sessions if s["pageviews"] == 1 and s["events"] > 1]
    assert any(s["is_bounce"] and s["engaged_ms"] == 10_000 for s in one_view)  # reports, 10 s: a bounce
    assert any(not s["is_bounce"] and s["engaged_ms"] == 10_001 and s["events"] == 2 for s in one_view)
    got = rows(client, "SELECT session_id, is_bounce, is_engaged, engaged_ms, max_scroll_depth FROM v_sessions "
                       "WHERE pageviews = 1 AND events > 1 AND is_bot = 0")
    want = {s["session_id"]: s for s in one_view}
    assert {r["session_id"] for r in got} == set(want)
    for r in got:
        assert {k: r[k] for k in ("is_bounce", "is_engaged", "engaged_ms", "max_scroll_depth")} == {
            k: want[r["session_id"]][k] for k in ("is_bounce", "is_engaged", "engaged_ms", "max_scroll_depth")}


def test_revenue_per_session_landing_page_and_channel_by_currency(loaded: Loaded) -> None:
    client, truth, _ = loaded
    per_session = truth.revenue()
    assert {c for by in per_session.values() for c in by} == {"EUR", "USD"}
    got = {r["session_id"]: r["revenue"] for r in rows(client, "SELECT session_id, revenue FROM v_sessions")}
    assert {sid: rev for sid, rev in got.items() if rev} == per_session
    landing = {r["landing_path"]: r["revenue"]
               for r in rows(client, "SELECT landing_path, revenue FROM v_landing_pages")}
    assert {k: v for k, v in landing.items() if v} == truth.revenue_by(lambda s: s["entry_path"])
    channels = {(r["channel"], r["utm_source"], r["utm_medium"], r["utm_campaign"]): r["revenue"]
                for r in rows(client, "SELECT * FROM v_channels")}
    want = truth.revenue_by(lambda s: (s["channel"], s["utm_source"], s["utm_medium"], s["utm_campaign"]))
    assert {k: v for k, v in channels.items() if v} == want


def test_v_landing_pages_matches(loaded: Loaded) -> None:
    client, truth, _ = loaded
    expected = truth.landing_pages()
    got = {r["landing_path"]: r for r in rows(client, "SELECT * FROM v_landing_pages")}
    assert set(got) == set(expected)
    assert sum(w["leads"] for w in expected.values()) == len(truth.traffic.leads) > 0
    for path, want in expected.items():
        assert {k: got[path][k] for k in want} == want, path
        assert got[path]["conversion_rate"] == pytest.approx(want["leads"] / want["sessions"], abs=1e-12)


def test_v_channels_matches(loaded: Loaded) -> None:
    client, truth, _ = loaded
    expected = truth.channels()
    got = {(r["channel"], r["utm_source"], r["utm_medium"], r["utm_campaign"]): r
           for r in rows(client, "SELECT * FROM v_channels")}
    assert set(got) == set(expected)
    assert {k[0] for k in expected} >= {"direct", "organic_search", "paid_search", "email", "referral"}
    for key, want in expected.items():
        assert {k: got[key][k] for k in want} == want, key


def test_v_variant_lift_matches_statsmodels(loaded: Loaded) -> None:
    client, truth, _ = loaded
    expected = truth.variant_counts()
    got = {(r["experiment_id"], r["variant_id"]): r for r in rows(client, "SELECT * FROM v_variant_lift")}
    assert set(got) == set(expected)
    for (exp, var), want in expected.items():
        row = got[(exp, var)]
        assert (row["visitors"], row["converters"]) == (want["visitors"], want["converters"]), (exp, var)
        control = expected[(exp, "control")]
        assert row["is_control"] == int(var == "control")
        if var == "control":
            assert row["lift"] is None and row["z"] is None and row["p_value"] is None
            continue
        z, p = proportions_ztest([want["converters"], control["converters"]],
                                 [want["visitors"], control["visitors"]])
        assert row["z"] == pytest.approx(z, abs=1e-6)
        assert row["p_value"] == pytest.approx(p, abs=1e-6)
        rate, control_rate = want["converters"] / want["visitors"], control["converters"] / control["visitors"]
        assert row["lift"] == pytest.approx(rate / control_rate - 1, abs=1e-12)
        low, high = confint_proportions_2indep(want["converters"], want["visitors"], control["converters"],
                                               control["visitors"], method="wald", compare="diff")
        assert (row["ci95_low"], row["ci95_high"]) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
        assert row["ci95_low"] < rate - control_rate < row["ci95_high"]
