"""Suite 3, overload and disk (RELIABILITY.md): the spool quota answers 503 + Retry-After and the
events of the 503 answers are exactly those not accepted; a disk that fills up under the spool, under
`rejected/` and under the stitcher's outbox (a 6 MiB tmpfs mounted by the test, root only) turns
readiness off and answers 503, never a 202 or 201 for something not written; once space returns
the service resumes and nothing is lost (exact audit in ClickHouse).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from load.procs import Proc
from tests.conftest import make_event
from tests.reliability.conftest import Reaper
from tests.reliability.support import STITCH, chdb_query, report, spool_drained, spool_event_ids, wait_until

BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
TMPFS_BYTES = 6 * 1024 * 1024


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int = TMPFS_BYTES) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted at `path` for the test (skips, with the reason, when not root
    or when mounting is not allowed, e.g. in an unprivileged container)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (run as root, or in a privileged container)")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave_bytes: int) -> Path:
    """Write a filler file until at most `leave_bytes` are free in `directory`'s filesystem."""
    filler = directory / "filler.bin"
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        fh.write(b"\0" * max(0, free - leave_bytes))
    return filler


def events(n: int, site: str, **overrides: Any) -> list[dict[str, Any]]:
    return [make_event(site_id=site, anonymous_id=f"a-{uuid.uuid4().hex[:8]}", session_id=f"s-{i % 50}",
                       **overrides) for i in range(n)]


def post(http: httpx.Client, body: Any) -> httpx.Response:
    return http.post("/collect", json=body, headers={"User-Agent": BROWSER_UA})


def metric(proc: Proc, pattern: str) -> float:
    text = proc.client().get("/metrics").text
    return sum(float(m) for m in re.findall(rf"^{pattern} ([0-9.e+]+)$", text, re.MULTILINE))


def drain_and_count(reaper: Reaper, data: Path, spool: Path, clickhouse: Path, env: dict[str, str],
                    site: str) -> dict[str, int]:
    """Run a flusher on the spool until it is empty; event_id -> rows in `events` of `site`."""
    flusher = reaper.start("flusher", data, {**env, "CLICKSTREAM_CLICKHOUSE_URL": f"chdb://{clickhouse}"})
    try:
        wait_until(lambda: spool_drained(spool), 120, "the flusher to drain the spool")
    finally:
        assert flusher.stop() == 0, flusher.log()[-3000:]
    with chdb_query(clickhouse) as query:
        return {r["id"]: r["n"] for r in query(f"SELECT toString(event_id) AS id, count() AS n FROM events "
                                               f"WHERE site_id = '{site}' GROUP BY id")}


def test_spool_quota_answers_503_for_exactly_the_events_not_accepted(tmp_path: Path, reaper: Reaper) -> None:
    data, site = tmp_path / "data", "quota.example"
    env = {"CLICKSTREAM_SPOOL_MAX_BYTES": "150000"}
    collector = reaper.start("collector", data, env)
    acked: set[str] = set()
    refused: list[list[dict[str, Any]]] = []
    retry_after: set[str | None] = set()
    with collector.client() as http:
        for _ in range(60):
            batch = events(10, site)
            answer = post(http, batch)
            assert answer.status_code in (202, 503), answer.text
            if answer.status_code == 202:
                assert answer.json()["accepted"] == 10
                acked |= {e["event_id"] for e in batch}
            else:
                refused.append(batch)
                retry_after.add(answer.headers.get("retry-after"))
        ready = http.get("/readyz")
    assert refused and acked, "the quota was never reached (or reached at once)"
    assert retry_after == {"1"}
    assert ready.status_code == 503 and not ready.json()["checks"]["spool_under_quota"]["ok"]
    # the client's view and the server's counts agree: every 503 event is one not accepted
    sent = 600
    refused_events = sum(len(b) for b in refused)
    assert sent - len(acked) == refused_events
    assert metric(collector, r'clickstream_requests_total\{status="503"\}') == len(refused)
    assert metric(collector, r'clickstream_events_rejected_total\{reason="spool_full"\}') == len(refused)
    assert metric(collector, "clickstream_events_accepted_total") == len(acked)
    in_spool = spool_event_ids(data / "spool")
    assert sorted(in_spool) == sorted(acked)  # each acknowledged event spooled once, no refused one

    # a flusher drains the spool: the collector takes the refused batches again
    flusher = reaper.start("flusher", data, {**env, "CLICKSTREAM_CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}"})
    try:
        wait_until(lambda: collector.client().get("/readyz").status_code == 200, 60, "readiness after the drain")
        with collector.client() as http:
            for batch in refused:  # as a client does: again after Retry-After while the quota refills
                def taken(body: list[dict[str, Any]] = batch) -> bool:
                    return post(http, body).status_code == 202

                wait_until(taken, 60, "a 202 for a refused batch")
                acked |= {e["event_id"] for e in batch}
        assert collector.stop() == 0
        wait_until(lambda: spool_drained(data / "spool"), 120, "the flusher to drain the spool")
    finally:
        assert flusher.stop() == 0, flusher.log()[-3000:]
    with chdb_query(tmp_path / "ch") as query:
        rows = {r["id"]: r["n"] for r in query(f"SELECT toString(event_id) AS id, count() AS n FROM events "
                                               f"WHERE site_id = '{site}' GROUP BY id")}
    assert rows == dict.fromkeys(acked, 1)
    report("overload_quota", {"sent": sent, "acknowledged_first": sent - refused_events,
                              "answers_503": len(refused), "events_503": refused_events,
                              "acknowledged_after_drain": len(acked), "rows_in_events": len(rows)})


def test_full_disk_under_the_spool_answers_503_never_202_and_resumes(tmp_path: Path, reaper: Reaper) -> None:
    data, site = tmp_path / "data", "disk.example"
    with tmpfs(tmp_path / "spool-fs") as spool_dir:
        env = {"CLICKSTREAM_SPOOL_PATH": str(spool_dir)}
        collector = reaper.start("collector", data, env)
        filler = fill(spool_dir, 256 * 1024)
        acked: set[str] = set()
        refused: list[list[dict[str, Any]]] = []
        with collector.client() as http:
            for _ in range(120):
                batch = events(20, site)
                answer = post(http, batch)
                assert answer.status_code in (202, 503), answer.text
                if answer.status_code == 202:
                    acked |= {e["event_id"] for e in batch}
                else:
                    assert answer.headers.get("retry-after") == "1"
                    assert answer.json()["error"] == "spool_unavailable"
                    refused.append(batch)
            ready = http.get("/readyz")
        assert refused and acked
        assert ready.status_code == 503, ready.text
        assert not ready.json()["checks"]["spool_writable"]["ok"]
        # never a 202 for an event not written: every acknowledged one is in the spool, no refused one
        assert sorted(spool_event_ids(spool_dir)) == sorted(acked)
        assert collector.proc.poll() is None  # still serving

        filler.unlink()  # space returns
        wait_until(lambda: collector.client().get("/readyz").status_code == 200, 30, "readiness after space returned")
        with collector.client() as http:
            for batch in refused:
                assert post(http, batch).status_code == 202
                acked |= {e["event_id"] for e in batch}
        assert collector.stop() == 0, collector.log()[-3000:]
        rows = drain_and_count(reaper, data, spool_dir, tmp_path / "ch", env, site)
    assert rows == dict.fromkeys(acked, 1)
    report("overload_disk_spool", {"tmpfs_bytes": TMPFS_BYTES, "answers_202_while_filling": len(acked) // 20 -
                                   len(refused), "answers_503": len(refused),
                                   "events_503": sum(map(len, refused)), "rows_in_events": len(rows)})


def test_full_disk_under_rejected_answers_503_never_202_and_resumes(tmp_path: Path, reaper: Reaper) -> None:
    data, site = tmp_path / "data", "dead.example"
    with tmpfs(tmp_path / "rejected-fs") as rejected_dir:
        env = {"CLICKSTREAM_REJECTED_PATH": str(rejected_dir)}
        collector = reaper.start("collector", data, env)
        filler = fill(rejected_dir, 64 * 1024)
        acked: set[str] = set()
        refused: list[list[dict[str, Any]]] = []
        with collector.client() as http:
            for _ in range(60):
                batch = [*events(5, site), *events(5, site, type="Not A Type", title="x" * 2000)]
                answer = post(http, batch)
                assert answer.status_code in (202, 503), answer.text
                if answer.status_code == 202:
                    assert answer.json()["rejected"] == 5
                    acked |= {e["event_id"] for e in batch[:5]}
                else:
                    assert answer.headers.get("retry-after") == "1"
                    assert answer.json()["error"] == "rejected_unavailable"
                    refused.append(batch)
            # the last 503 may have left room for a small body (entries vary in size): take it, so the
            # malformed body below, which rejected/ must keep, finds no room
            rest = rejected_dir / "filler-rest.bin"
            st = os.statvfs(rejected_dir)
            with open(rest, "wb") as fh, contextlib.suppress(OSError):
                fh.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 1024))
            malformed = http.post("/collect", content=b"{not json" + b"x" * 4000,
                                  headers={"Content-Type": "application/json"})
            ready = http.get("/readyz")
        assert refused and acked
        assert malformed.status_code == 503, malformed.text  # not kept: refused, not a 400 with nothing kept
        assert ready.status_code == 503 and not ready.json()["checks"]["rejected_writable"]["ok"], ready.text
        kept_ids = _kept_ids(rejected_dir)
        # a 503 spooled nothing of its batch, and every 202's rejected events are kept
        assert set(spool_event_ids(data / "spool")) == acked
        assert len(kept_ids) == 5 * (60 - len(refused))

        filler.unlink()
        rest.unlink()
        wait_until(lambda: collector.client().get("/readyz").status_code == 200, 30, "readiness after space returned")
        with collector.client() as http:
            for batch in refused:
                answer = post(http, batch)
                assert answer.status_code == 202 and answer.json()["rejected"] == 5
                acked |= {e["event_id"] for e in batch[:5]}
        assert len(_kept_ids(rejected_dir)) == 5 * 60
        assert collector.stop() == 0, collector.log()[-3000:]
    rows = drain_and_count(reaper, data, data / "spool", tmp_path / "ch", {}, site)
    assert rows == dict.fromkeys(acked, 1)
    report("overload_disk_rejected", {"tmpfs_bytes": TMPFS_BYTES, "answers_503": len(refused),
                                      "dead_letters_kept": 5 * 60, "rows_in_events": len(rows)})


def _kept_ids(directory: Path) -> set[str]:
    from collector.rejected import RejectedStore

    return {str(entry["event"]["event_id"]) for entry in RejectedStore(directory).read_all()
            if isinstance(entry.get("event"), dict)}


def test_full_disk_under_the_outbox_answers_503_never_201_and_resumes(tmp_path: Path, reaper: Reaper) -> None:
    data = tmp_path / "stitcher"
    with tmpfs(data / "outbox") as outbox_dir:
        stitcher = reaper.start("stitcher", data, {"CLICKSTREAM_STITCH_TOKEN": STITCH})
        headers = {"Authorization": f"Bearer {STITCH}"}

        def stitch(lead_id: str) -> httpx.Response:
            return stitcher.client().post("/stitch", headers=headers, json={
                "lead_id": lead_id, "anonymous_id": f"anon-{lead_id}", "site_id": "outbox.example",
                "properties": {f"note{i}": "y" * 200 for i in range(10)}})

        created = [f"L-{i}" for i in range(5) if stitch(f"L-{i}").status_code == 201]
        assert len(created) == 5
        filler = fill(outbox_dir, 0)
        answers = {f"L-full-{i}": stitch(f"L-full-{i}") for i in range(20)}
        statuses = {r.status_code for r in answers.values()}
        assert statuses <= {201, 503}, {k: (r.status_code, r.text[:200]) for k, r in answers.items()}
        refused = [k for k, r in answers.items() if r.status_code == 503]
        created += [k for k, r in answers.items() if r.status_code == 201]
        assert refused, "the full outbox never refused"
        assert all(answers[k].headers.get("retry-after") == "1" for k in refused)
        ready = stitcher.client().get("/readyz")
        assert ready.status_code == 503 and not ready.json()["checks"]["outbox_writable"]["ok"], ready.text

        filler.unlink()
        wait_until(lambda: stitcher.client().get("/readyz").status_code == 200, 30, "readiness after space returned")
        for lead_id in refused:
            assert stitch(lead_id).status_code == 201
        created += refused

        def delivered() -> bool:
            text = stitcher.client().get("/metrics").text
            return re.search(r'^clickstream_stitcher_relay_pending\{target="clickhouse"\} 0\.0$', text,
                             re.MULTILINE) is not None

        try:
            wait_until(delivered, 60, "the relay to deliver every lead")
        except AssertionError:
            print(stitcher.client().get("/metrics").text[-3000:], stitcher.log()[-5000:])
            raise
        assert stitcher.stop() == 0, stitcher.log()[-3000:]
    with chdb_query(data / "clickhouse") as query:
        rows = {r["lead_id"]: r["n"] for r in query("SELECT lead_id, count() AS n FROM lead_events GROUP BY lead_id")}
    assert rows == dict.fromkeys(created, 1)
    report("overload_disk_outbox", {"tmpfs_bytes": TMPFS_BYTES, "answers_503": len(refused),
                                    "leads_in_lead_events": len(rows)})
