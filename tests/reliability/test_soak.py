"""Suite 8, soak (RELIABILITY.md): `serve` at a steady rate for RELIABILITY_SOAK_S seconds (CI: 600 s,
the 10 minutes RELIABILITY.md states; `make reliability`: 1,800 s;
`make soak`: SOAK_S, default 3,600 s).
Every 5 s: resident memory, open file descriptors, spool segments and ClickHouse active parts,
printed as JSON lines, kept in RESULTS/soak.jsonl and plotted (soak.png). Pass conditions are
bounds on those resources, not timings, and the exact audit of every event at the end.

Bounds (stated here and in RELIABILITY.md), split in thirds of the run: a resource that leaks keeps
growing from one third to the next, one that warms up (the engine's caches and thread pools, the
client-retry memory) levels off. So the median of the last third must not exceed the peak of the
middle third by more than a margin: RSS 10 % + 32 MiB; open fds other than chDB's per-thread
/proc/<pid>/task/<tid>/* handles (three per thread of its pools, they follow the thread count) 32;
threads 32. And absolutely: spool segments (about the seconds of backlog: a segment is sealed every
second) at most 120 at any sample and none once `serve` has drained on SIGTERM; active parts at most
300 (ClickHouse delays inserts at 1,000 parts in a partition).
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from reports.query import port_rows_query
from tests.reliability.conftest import Reaper
from tests.reliability.support import (
    FULL,
    RESULTS,
    SQL_PASSWORD,
    LoadThread,
    Supervised,
    chdb_query,
    children_rss_bytes,
    full_audit,
    latency_ms,
    open_fds,
    reconcile_problems,
    report,
    spool_segments,
    threads,
    traffic_for,
)

SOAK_S = float(os.environ.get("RELIABILITY_SOAK_S", 1800 if FULL else 600))
RATE = float(os.environ.get("RELIABILITY_SOAK_RATE", 200))
SAMPLE_S = 5.0
MiB = 1024 * 1024


def plot(samples: list[dict[str, Any]], path: Path) -> None:
    """One PNG, five panels over elapsed seconds: RSS (MiB), fds (all and other), threads, spool
    segments, active parts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] for s in samples]
    fig, axes = plt.subplots(5, 1, figsize=(8, 11), sharex=True)
    panels = (("rss_mib",), ("fds", "fds_other"), ("threads",), ("spool_segments",), ("active_parts",))
    labels = ("RSS (MiB)", "open fds (all, other)", "threads", "spool segments", "active parts")
    for ax, keys, label in zip(axes, panels, labels, strict=True):
        for key in keys:
            ax.plot(t, [s[key] for s in samples], label=key)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel(f"seconds of load at {RATE:.0f} events/s")
    fig.suptitle("clickstream serve soak")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@pytest.mark.timeout(int(SOAK_S) + 600)
def test_soak_resources_stay_bounded_and_audit_is_exact(tmp_path: Path, reaper: Reaper) -> None:
    site = f"soak-{int(time.time())}.example"
    traffic = traffic_for(81, int(RATE * SOAK_S), site)
    serve = reaper.track(Supervised("serve", tmp_path / "data", {"CLICKSTREAM_SQL_PASSWORD": SQL_PASSWORD})).start()
    assert serve.proc is not None
    query, client = port_rows_query(serve.proc.sql_url, "dashboards", SQL_PASSWORD)
    load = LoadThread(serve.url, traffic, rate=RATE, seed=81)
    samples: list[dict[str, Any]] = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = (RESULTS / f"soak{'-full' if FULL else ''}.jsonl").open("w")
    done = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not done.wait(SAMPLE_S if samples else 0):
            (parts,) = query("SELECT count() AS n FROM system.parts WHERE active AND database = 'clickstream'")
            fds, other = open_fds(serve.pid)
            row = {"t_s": round(time.monotonic() - started, 1),
                   "rss_mib": round(children_rss_bytes(serve.pid) / MiB, 1), "fds": fds, "fds_other": other,
                   "threads": threads(serve.pid), "spool_segments": spool_segments(serve.data_dir / "spool"),
                   "active_parts": int(parts["n"])}
            samples.append(row)
            lines.write(json.dumps(row) + "\n")
            lines.flush()
            print(json.dumps(row), flush=True)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    load.start()
    try:
        ledger = load.result(timeout_s=SOAK_S + 300)
    finally:
        done.set()
        sampler.join()
        lines.close()
        client.close()
    plot(samples, RESULTS / f"soak{'-full' if FULL else ''}.png")
    assert serve.stop() == 0, serve.log()
    with chdb_query(tmp_path / "data" / "clickhouse") as audit_query:
        problems, books = full_audit(audit_query, ledger, traffic, tmp_path / "data")
    problems += reconcile_problems(tmp_path / "data", site)

    third = max(1, len(samples) // 3)
    first, middle, last = samples[:third], samples[third:-third] or samples, samples[-third:]

    def peak(rows: list[dict[str, Any]], key: str) -> float:
        return float(max(r[key] for r in rows))

    def median(rows: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in rows))

    figures = {"duration_s": SOAK_S, "rate": RATE, "samples": len(samples), **ledger.summary(),
               "p99_ms": latency_ms(ledger.latencies_s, 0.99),
               "rss_mib": {"start": samples[0]["rss_mib"], "end": samples[-1]["rss_mib"],
                           "first_third_peak": peak(first, "rss_mib"), "middle_third_peak": peak(middle, "rss_mib"),
                           "last_third_median": median(last, "rss_mib")},
               "fds": {"start": samples[0]["fds"], "end": samples[-1]["fds"], "peak": peak(samples, "fds")},
               "fds_other": {"start": samples[0]["fds_other"], "end": samples[-1]["fds_other"],
                             "middle_third_peak": peak(middle, "fds_other"),
                             "last_third_median": median(last, "fds_other")},
               "threads": {"start": samples[0]["threads"], "end": samples[-1]["threads"],
                           "middle_third_peak": peak(middle, "threads"), "last_third_median": median(last, "threads")},
               "spool_segments_peak": peak(samples, "spool_segments"),
               "active_parts": {"peak": peak(samples, "active_parts"), "first_third_peak": peak(first, "active_parts"),
                                "last_third_peak": peak(last, "active_parts"), "end": samples[-1]["active_parts"]},
               "accounting": books.as_dict(), "problems": problems[:20]}
    report("soak", figures)
    assert problems == [], problems[:20]
    assert len(samples) >= 6, figures
    assert median(last, "rss_mib") <= peak(middle, "rss_mib") * 1.10 + 32, figures
    assert median(last, "fds_other") <= peak(middle, "fds_other") + 32, figures
    assert median(last, "threads") <= peak(middle, "threads") + 32, figures
    assert peak(samples, "spool_segments") <= 120, figures
    assert spool_segments(tmp_path / "data" / "spool") == 0, figures
    assert peak(samples, "active_parts") <= 300, figures
