"""Several writers on one machine, on real processes: `serve --workers 2` under load with a worker
killed mid-run (audit exact), collectors on separate spools drained by one ClickHouse owner with one
client-retry memory, two flushers racing on one spool, and a flusher moved with its spool volume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from clickstream.core.clickhouse import connect
from load.model import ModelConfig, generate
from load.procs import free_port, start
from tests.conftest import ROOT, Server, make_event, sql_rows, wait_for
from tests.integration.test_load import SQL_PASSWORD, STITCH, run_load


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


#: crawlerdetect counts python-httpx as a bot; the collectors here stand in for a browser's beacon
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"


def sql(server: Server, query: str) -> list[list[object]]:
    return sql_rows(server, query)


def test_serve_workers_under_load_with_a_worker_killed_audits_exact(
        server_factory: Callable[..., Server], tmp_path: Path) -> None:
    server = server_factory("serve", workers=2, stitch_token=STITCH, sql_password=SQL_PASSWORD)
    workers = children(server.proc.pid)
    assert len(workers) == 2
    killed: list[int] = []

    def kill_one_worker_mid_run() -> None:
        wait_for(lambda: any((server.data_dir / "spool" / "w0").iterdir()), timeout_s=60)
        time.sleep(1.0)
        os.kill(workers[0], signal.SIGKILL)  # acknowledged events stay in its spool (page cache)
        killed.append(workers[0])

    killer = threading.Thread(target=kill_one_worker_mid_run)
    killer.start()
    result = run_load(server, tmp_path / "run", "--events", "12000", "--seed", "7")
    killer.join()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # every acknowledged event exactly once, every rejection kept, every view = the ground truth,
    # including requests retried after the kill (on the other worker: another spool)
    assert summary["audit"] == {"clean": True, "problems": 0}
    assert summary["leads"] > 0
    assert killed and len(children(server.proc.pid)) == 2  # the killed worker was started again
    assert killed[0] not in children(server.proc.pid)
    assert (server.data_dir / "spool" / "w1").is_dir()
    assert server.stop() == 0, server.log()
    assert children(server.proc.pid) == []


def test_collectors_on_separate_spools_drain_into_one_clickhouse_once(tmp_path: Path) -> None:
    """Two collectors, each on its own spool, get the same event (a client retry that went to the
    other one); `serve --workers 2` on that data directory drains both spools with one client-retry
    memory: the event is stored once. Events only one collector got are all stored."""
    data = tmp_path / "data"
    retried = make_event(site_id="two.example", anonymous_id="a-retry", session_id="s-retry")
    for index in (0, 1):
        collector = start("collector", data, {"CLICKSTREAM_SPOOL_PATH": str(data / "spool" / f"w{index}"),
                                              "CLICKSTREAM_REJECTED_PATH": str(data / "rejected" / f"w{index}")})
        with collector.client(headers={"User-Agent": BROWSER_UA}) as http:
            own = [make_event(site_id="two.example", anonymous_id=f"a{index}-{i}", session_id=f"s{index}-{i}")
                   for i in range(20)]
            assert http.post("/collect", json=[*own, retried]).status_code == 202
        assert collector.stop() == 0
    assert list((data / "spool" / "w0").glob("*.seg")) and list((data / "spool" / "w1").glob("*.seg"))
    owner = start("serve", data, {"CLICKSTREAM_WORKERS": "2", "CLICKSTREAM_SQL_PASSWORD": SQL_PASSWORD},
                  ready_path="/readyz")
    try:
        wait_for(lambda: sql(owner, "SELECT count() FROM events")[0][0] == 41, timeout_s=60)
        rows = sql(owner, f"SELECT count() FROM events WHERE event_id = '{retried['event_id']}'")
        assert rows == [[1]]
        assert sql(owner, "SELECT sum(events) FROM sessions") == [[41]]  # the view target too
    finally:
        assert owner.stop() == 0, owner.log()


def _spool_history(data: Path, n_events: int) -> int:
    """Sealed spool segments of `n_events` load-model events, through `clickstream import`."""
    traffic = generate(ModelConfig(seed=11, visitors=max(1, n_events // 10)))
    data.parent.mkdir(parents=True, exist_ok=True)
    jsonl = data.parent / "history.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(event) + b"\n" for event, _ in traffic.events[:n_events]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")}
    out = subprocess.run([sys.executable, "-m", "clickstream.cli", "import", str(jsonl), "--data-dir", str(data)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    accepted: int = json.loads(out.stdout.strip().splitlines()[-1])["accepted"]
    return accepted


def test_two_flushers_racing_on_one_spool_never_both_insert(tmp_path: Path) -> None:
    data = tmp_path / "data"
    n = _spool_history(data, 5000)
    env = {"CLICKSTREAM_FLUSH_MAX_ROWS": "200"}
    # two ClickHouses, so that whatever each flusher inserted can be counted apart
    logs = [tmp_path / f"flusher-{i}.log" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "clickstream.cli", "flusher"], cwd=ROOT,
                              env={**{k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")},
                                   **env, "CLICKSTREAM_DATA_DIR": str(data), "CLICKSTREAM_PORT": str(free_port()),
                                   "CLICKSTREAM_CLICKHOUSE_URL": f"chdb://{tmp_path / f'ch{i}'}"},
                              stdout=log.open("wb"), stderr=subprocess.STDOUT)
             for i, log in enumerate(logs)]
    # the one that does not get the spool's lock exits, whenever it gets there: a fast drain by the
    # other may be over before then (both holding the lock would hang here instead)
    wait_for(lambda: any(p.poll() is not None for p in procs), timeout_s=120)
    loser = next((p for p in procs if p.poll() is not None), None)
    wait_for(lambda: not list((data / "spool").glob("*.seg")), timeout_s=120)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    assert loser is not None and loser.returncode != 0
    assert "is held by another process" in logs[procs.index(loser)].read_text()
    counts = []
    for i in range(2):
        client = connect(f"chdb://{tmp_path / f'ch{i}'}")
        try:
            counts.append(client.query("SELECT count(), uniqExact(event_id) FROM events").result_rows[0])
        finally:
            client.close()
    assert sorted(counts) == [(0, 0), (n, n)]  # one claimed the spool and inserted it all, the other nothing


def test_flusher_moved_with_its_spool_resumes_exactly_once(tmp_path: Path) -> None:
    data = tmp_path / "host-a" / "data"
    n = _spool_history(data, 20000)
    clickhouse = {"CLICKSTREAM_CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
                  "CLICKSTREAM_FLUSH_MAX_ROWS": "200"}  # many inserts per segment: a kill lands mid-segment
    flusher = start("flusher", data, clickhouse)

    def flushed_rows() -> float:
        text = httpx.get(flusher.url + "/metrics", timeout=10).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("clickstream_flusher_rows_total"))

    wait_for(lambda: flushed_rows() > 1000, timeout_s=120)
    flusher.stop(signal.SIGKILL)
    assert list((data / "spool").glob("*.seg")), "the kill came too late: nothing left to resume"
    moved = tmp_path / "host-b" / "data"
    moved.parent.mkdir()
    shutil.move(str(data), str(moved))  # the volume, attached to another host
    resumed = start("flusher", moved, clickhouse)
    wait_for(lambda: not list((moved / "spool").glob("*.seg")), timeout_s=180)
    assert resumed.stop() == 0, resumed.log()
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        assert client.query("SELECT count(), uniqExact(event_id) FROM events").result_rows == [(n, n)]
        # the materialized-view targets too: a re-inserted batch would count twice here
        assert client.query("SELECT sum(events) FROM sessions").result_rows == [(n,)]
    finally:
        client.close()


def test_stitch_right_after_an_event_sees_it_whichever_worker_took_it(
        server_factory: Callable[..., Server]) -> None:
    """The freshness flush covers every worker's spool: each visitor's page view, sent on its own
    connection (the kernel spreads connections over the workers), is the landing page of the lead
    stitched right after it, before any segment could have been sealed by age."""
    server = server_factory("serve", workers=2, stitch_token=STITCH, sql_password=SQL_PASSWORD,
                            spool_segment_max_age_ms=600_000, flush_interval_ms=600_000)
    for i in range(8):
        event = make_event(site_id="fresh.example", anonymous_id=f"v{i}", session_id=f"s{i}",
                           url=f"https://fresh.example/landing-{i}?utm_source=news")
        with server.client(headers={"User-Agent": BROWSER_UA}) as http:  # a new connection each time
            assert http.post("/collect", json=event).status_code == 202
        with server.client(headers={"Authorization": f"Bearer {STITCH}"}) as http:
            lead = http.post("/stitch", json={"lead_id": f"lead-{i}", "anonymous_id": f"v{i}"})
        assert lead.status_code == 201, lead.text
        assert lead.json()["landing_path"] == f"/landing-{i}"
        assert lead.json()["first_touch"]["utm_source"] == "news"
    assert server.stop() == 0, server.log()
