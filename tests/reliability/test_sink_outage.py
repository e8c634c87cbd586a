"""Suite 2, sink outage and a stalled sink (RELIABILITY.md), split deployment: the flusher (the only
process that talks to ClickHouse) is stopped with SIGSTOP for 60 s at full size (20 s in CI) while
the load driver sends at a steady rate to the collector. During the outage the collector keeps
answering 202 and stays ready; the flusher's /readyz gives no answer (a probe's timeout: not
ready). After SIGCONT the backlog drains, and the audit is exact. The collector's latency before,
during and after the stall is reported (figures, not a pass condition).

A ClickHouse URL that refuses connections is not the same case: a flusher started on one exits at
start (its migrations cannot run) and is restarted by its supervisor; the kill loop covers that.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.reliability.conftest import Reaper
from tests.reliability.support import (
    FULL,
    LoadThread,
    Supervised,
    chdb_query,
    full_audit,
    get,
    latency_ms,
    reconcile_problems,
    report,
    size,
    spool_drained,
    traffic_for,
    wait_until,
)

RATE = size(200, 500)
OUTAGE_S = size(20, 60)
BEFORE_S, AFTER_S = 10.0, 15.0


@pytest.mark.timeout(1800 if FULL else 900)
def test_flusher_stopped_collector_keeps_answering_backlog_drains_exactly(tmp_path: Path, reaper: Reaper) -> None:
    data = tmp_path / "data"
    site = f"outage-{int(time.time())}.example"
    traffic = traffic_for(41, int(RATE * (BEFORE_S + OUTAGE_S + AFTER_S)), site)
    collector = reaper.track(Supervised("collector", data, {})).start()
    flusher = reaper.track(Supervised("flusher", data, {})).start()
    load = LoadThread(collector.url, traffic, rate=RATE, seed=41)
    probes: dict[str, list[int | None]] = {"collector": [], "flusher": []}
    window: list[float] = []
    backlog_bytes: list[int] = []

    def outage() -> None:
        time.sleep(BEFORE_S)
        os.kill(flusher.pid, signal.SIGSTOP)
        window.append(time.perf_counter())
        while time.perf_counter() - window[0] < OUTAGE_S:
            for name, proc in (("collector", collector), ("flusher", flusher)):
                answer = get(proc.url + "/readyz", timeout_s=1.0)
                probes[name].append(None if answer is None else answer.status_code)
            time.sleep(1.0)
        backlog_bytes.append(sum(p.stat().st_size for p in (data / "spool").glob("*.seg")))
        os.kill(flusher.pid, signal.SIGCONT)
        window.append(time.perf_counter())

    stopper = threading.Thread(target=outage, daemon=True)
    load.start()
    stopper.start()
    try:
        ledger = load.result(timeout_s=1200 if FULL else 600)
        stopper.join(timeout=OUTAGE_S + 60)
    finally:
        if len(window) == 1:
            os.kill(flusher.pid, signal.SIGCONT)
    assert len(window) == 2, "the outage did not end"
    drain_s = wait_until(lambda: spool_drained(data / "spool") and time.perf_counter(), 300,
                         "the backlog to drain") - window[1]
    assert collector.stop() == 0, collector.log()
    wait_until(lambda: spool_drained(data / "spool"), 120, "the last segment to drain")
    assert flusher.stop() == 0, flusher.log()
    with chdb_query(data / "clickhouse") as query:
        problems, books = full_audit(query, ledger, traffic, data)
    problems += reconcile_problems(data, site)

    start, end = (t - ledger.origin_s for t in window)
    phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    statuses_during = 0
    for at, latency in zip(ledger.sent_at_s, ledger.latencies_s, strict=True):
        phase = "before" if at < start else "during" if at < end else "after"
        phases[phase].append(latency)
        statuses_during += phase == "during"
    figures = {"outage_s": round(end - start, 1), "rate": RATE, **ledger.summary(),
               "answers_during_outage": statuses_during,
               "collector_readyz_during": sorted({str(s) for s in probes["collector"]}),
               "flusher_readyz_during": sorted({str(s) for s in probes["flusher"]}),
               "backlog_bytes_at_recovery": backlog_bytes[0] if backlog_bytes else None,
               "spool_empty_s_after_recovery": round(drain_s, 2),
               "collector_latency_ms": {phase: {"p50": latency_ms(v, 0.5), "p99": latency_ms(v, 0.99),
                                                "n": len(v)} for phase, v in phases.items()},
               "accounting": books.as_dict(), "problems": problems[:20]}
    report("sink_outage", figures)
    assert problems == [], problems[:20]
    assert ledger.unanswered_attempts == 0 and ledger.retries == 0, figures  # no lost answer, no 503
    assert statuses_during > 0 and set(probes["collector"]) == {200}, figures
    assert probes["flusher"] and set(probes["flusher"]) == {None}, figures  # a probe of it times out
