"""Suite 1, kill loop (RELIABILITY.md): `serve`, then the split deployment (`collector` + `flusher` +
`stitcher` as separate processes), under the load driver of `clickstream load`; every process is
SIGKILLed after a random 2-10 s of service and restarted on the same data directory and port.

The audit is exact: every acknowledged event once in `events`, none that was not acknowledged,
every rejection kept with its reason, every dashboard view equal to the load model's ground truth,
every session roll-up equal to a recount over `events`, every acknowledged lead once in
`lead_events` (a plain MergeTree), and the accounting identity. Events that got no answer
on an attempt are counted (the driver retried them: the flusher's client-retry memory makes that
safe) and reported.

CI size: the kills that fit in the traffic of 3 (serve) or 2 (split) planned kills, 300 events/s. Full
size (RELIABILITY_FULL=1): 20 kills of each process (each killer stops at 20; the traffic lasts for
about 22 s a kill), 300 events/s.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from load.model import Traffic
from tests.reliability.conftest import Reaper
from tests.reliability.support import (
    FULL,
    LEAD_RETRY_S,
    SQL_PASSWORD,
    STITCH,
    KillLoop,
    LeadLedger,
    LoadThread,
    Query,
    Supervised,
    chdb_query,
    full_audit,
    latency_ms,
    reconcile_problems,
    relay_idle,
    report,
    size,
    spool_drained,
    stitch_leads,
    traffic_for,
    wait_until,
)

RATE = size(300, 300)  # events/s offered (open loop)
#: seconds of load per planned kill: a 2-10 s interval (mean 6 s) plus the restart, with slack (more at
#: full size, where each killer stops after its 20 kills: a slow machine restarts slowly)
SECONDS_PER_KILL = size(14.0, 22.0)


def lead_problems(query: Query, site: str, stitched: dict[str, dict[str, Any]]) -> list[str]:
    """Every acknowledged lead exactly once in lead_events (a plain MergeTree: no FINAL to apply), with
    the event_id it was answered with; no lead that was never acknowledged."""
    problems: list[str] = []
    rows = {r["lead_id"]: r for r in query(
        f"SELECT lead_id, count() AS n, any(toString(event_id)) AS event_id FROM lead_events "
        f"WHERE site_id = '{site}' GROUP BY lead_id")}
    for lead_id, event in stitched.items():
        row = rows.get(lead_id)
        if row is None:
            problems.append(f"lead {lead_id}: acknowledged, not in lead_events")
        elif row["n"] != 1 or row["event_id"] != event["event_id"]:
            problems.append(f"lead {lead_id}: {row['n']} rows in lead_events, event {row['event_id']} "
                            f"(answered {event['event_id']})")
    problems += [f"lead {lead_id}: in lead_events, never acknowledged" for lead_id in sorted(set(rows) - set(stitched))]
    return problems


def _leads_only(traffic: Traffic) -> Traffic:
    return dataclasses.replace(traffic, leads=[])


@pytest.mark.timeout(3600 if FULL else 1200)
def test_serve_kill_loop_loses_and_duplicates_nothing(tmp_path: Path, reaper: Reaper) -> None:
    kills = int(size(3, 20))
    site = f"kill-serve-{int(time.time())}.example"
    traffic = traffic_for(21, int(RATE * kills * SECONDS_PER_KILL), site, leads=True)
    serve = reaper.track(Supervised("serve", tmp_path / "data", {"CLICKSTREAM_STITCH_TOKEN": STITCH,
                                                    "CLICKSTREAM_SQL_PASSWORD": SQL_PASSWORD})).start()
    load = LoadThread(serve.url, traffic, rate=RATE, seed=21, stitch_token=STITCH)
    stop = threading.Event()
    killer = KillLoop(serve, stop, seed=21, max_kills=0 if not FULL else kills)
    load.start()
    killer.start()
    try:
        ledger = load.result(timeout_s=3000 if FULL else 900)
    finally:
        stop.set()
        killer.join()
    assert killer.errors == [], killer.errors
    # A stop delivers pending leads for at most STOP_DRAIN_S (stitcher/service.py) and leaves the rest in
    # the outbox for the next start: wait for the relay, as an operator stopping for good would.
    wait_until(lambda: relay_idle(serve.url), 300, "the stitcher's relay to deliver every lead")
    assert serve.stop() == 0, serve.log()  # SIGTERM drains the spool into ClickHouse
    with chdb_query(tmp_path / "data" / "clickhouse") as query:
        problems, books = full_audit(query, ledger, traffic, tmp_path / "data")
        problems += lead_problems(query, site, ledger.stitched)
    problems += reconcile_problems(tmp_path / "data", site)
    figures = {"kills": {"serve": serve.kills}, "restart_s_max": round(max(serve.restart_s), 2),
               **ledger.summary(), "accounting": books.as_dict(), "problems": problems[:20]}
    report("kill_loop_serve", figures)
    assert problems == [], problems[:20]
    assert serve.kills >= (kills if FULL else 1) and ledger.stitched, figures  # the loop ran


@pytest.mark.timeout(3600 if FULL else 1200)
def test_split_deployment_kill_loop_loses_and_duplicates_nothing(tmp_path: Path, reaper: Reaper) -> None:
    """collector + flusher on one data directory (the flusher owns the embedded ClickHouse) and a
    stitcher on its own: with an embedded engine (one process per directory) the stitcher cannot read
    the flusher's ClickHouse, so it records the leads with the site from the request and without
    attribution; its outbox and relay are what the kills exercise. Each process has its own killer."""
    kills = int(size(2, 20))
    site = f"kill-split-{int(time.time())}.example"
    traffic = traffic_for(22, int(RATE * kills * SECONDS_PER_KILL * 1.3), site, leads=True)
    data = tmp_path / "data"
    collector = reaper.track(Supervised("collector", data, {})).start()
    flusher = reaper.track(Supervised("flusher", data, {})).start()
    # Its ClickHouse never sees telemetry, so waiting for the visitor's session (3 s by default) would only
    # stretch every stitch across the next kill: no wait, the lead is recorded unattributed at once.
    stitcher = reaper.track(Supervised("stitcher", tmp_path / "stitcher", {
        "CLICKSTREAM_STITCH_TOKEN": STITCH, "CLICKSTREAM_STITCH_SESSION_WAIT_S": "0"})).start()
    duration_s = len(traffic.events) / RATE
    load = LoadThread(collector.url, _leads_only(traffic), rate=RATE, seed=22)
    leads: list[LeadLedger] = []
    lead_thread = threading.Thread(target=lambda: leads.append(
        stitch_leads(stitcher.url, traffic.leads, rate=max(0.5, len(traffic.leads) / duration_s))))
    stop = threading.Event()
    killers = [KillLoop(proc, stop, seed=seed, max_kills=kills if FULL else 0)
               for seed, proc in enumerate((collector, flusher, stitcher), 30)]
    load.start()
    lead_thread.start()
    for killer in killers:
        killer.start()
    try:
        ledger = load.result(timeout_s=3000 if FULL else 900)
        lead_thread.join(timeout=LEAD_RETRY_S + 120)
    finally:
        stop.set()
        for killer in killers:
            killer.join()
    assert [k.errors for k in killers] == [[], [], []], [k.errors for k in killers]
    assert leads, "the stitch driver did not finish"
    lead_ledger = leads[0]

    # drain: the collector seals its open segment on SIGTERM, the flusher drains what is sealed
    assert collector.stop() == 0, collector.log()
    wait_until(lambda: spool_drained(data / "spool"), 300, "the flusher to drain the spool")
    assert flusher.stop() == 0, flusher.log()

    wait_until(lambda: relay_idle(stitcher.url), 300, "the stitcher's relay to deliver every lead")
    assert stitcher.stop() == 0, stitcher.log()

    with chdb_query(data / "clickhouse") as query:
        problems, books = full_audit(query, ledger, _leads_only(traffic), data)
    problems += reconcile_problems(data, site)
    with chdb_query(tmp_path / "stitcher" / "clickhouse") as query:
        problems += lead_problems(query, site, lead_ledger.stitched)
    problems += lead_ledger.unexpected
    figures = {"kills": {p.command: p.kills for p in (collector, flusher, stitcher)},
               "restart_s_max": {p.command: round(max(p.restart_s), 2) for p in (collector, flusher, stitcher)},
               **ledger.summary(), "p99_ms": latency_ms(ledger.latencies_s, 0.99),
               "leads": {"acknowledged": len(lead_ledger.stitched), "created": lead_ledger.created,
                         "repeats": lead_ledger.repeats, "unanswered_attempts": lead_ledger.unanswered_attempts,
                         "abandoned": len(lead_ledger.abandoned)},
               "accounting": books.as_dict(), "problems": problems[:20]}
    report("kill_loop_split", figures)
    assert problems == [], problems[:20]
    assert lead_ledger.abandoned == [] and len(lead_ledger.stitched) == len(traffic.leads), figures
    assert all(p.kills >= (kills if FULL else 1) for p in (collector, flusher, stitcher)), figures
