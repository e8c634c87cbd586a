"""Helpers of the reliability suites (RELIABILITY.md): supervised processes killed and restarted,
the load driver in a thread, the stitch driver for a separate stitcher, the exact audit with the
accounting identity, and resource samples.

Sizes: CI size by default, full size with RELIABILITY_FULL=1 (`make reliability`, `make soak`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from clickstream.core.clickhouse import connect
from clickstream.core.spool import SpoolReader
from collector.rejected import RejectedStore
from load.audit import audit
from load.driver import Ledger, drive
from load.model import Lead, ModelConfig, Traffic, Truth, generate
from load.procs import Proc, free_port, start

FULL = os.environ.get("RELIABILITY_FULL", "") == "1"
STITCH, SQL_PASSWORD = "stitch-secret", "sql-secret"
#: Where each suite writes its figures (one JSON file per test; RELIABILITY.md quotes them).
RESULTS = Path(os.environ.get("RELIABILITY_RESULTS", "/tmp/clickstream-reliability"))

Query = Callable[[str], list[dict[str, Any]]]
#: How long the stitch driver keeps retrying one lead that gets no answer (then it is `abandoned`).
LEAD_RETRY_S = 600.0


def size(ci: float, full: float) -> float:
    """The CI figure, or the full one under RELIABILITY_FULL=1."""
    return full if FULL else ci


def traffic_for(seed: int, events: int, site: str, *, leads: bool = False) -> Traffic:
    """Model traffic of about `events` events for `site`; with its leads only when `leads`."""
    sample = generate(ModelConfig(seed=seed, visitors=200, site_id=site))  # this seed's events per visitor
    per_visitor = (len(sample.events) + len(sample.invalid)) / 200
    traffic = generate(ModelConfig(seed=seed, visitors=max(1, round(events / per_visitor)), site_id=site))
    return traffic if leads else dataclasses.replace(traffic, leads=[])


def report(name: str, figures: dict[str, Any]) -> None:
    """Print the figures as one JSON line and keep them in RESULTS/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"suite": name, "full": FULL, **figures}, default=str)
    (RESULTS / f"{name}{'-full' if FULL else ''}.json").write_text(text + "\n")
    print(text)


# -- processes --------------------------------------------------------------------------------

@dataclasses.dataclass
class Supervised:
    """A `clickstream <command>` kept on one data directory and one port: `kill` SIGKILLs it,
    `restart` starts it again there (as a supervisor such as systemd or Kubernetes would)."""

    command: str
    data_dir: Path
    env: dict[str, str]
    ready_path: str = "/healthz"
    proc: Proc | None = None
    kills: int = 0
    restart_s: list[float] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = {"CLICKSTREAM_PORT": str(free_port()), "CLICKSTREAM_SQL_PORT": str(free_port()), **self.env}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['CLICKSTREAM_PORT']}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.proc.pid

    def start(self) -> Supervised:
        started = time.monotonic()
        self.proc = start(self.command, self.data_dir, self.env, ready_path=self.ready_path, timeout=120)
        self.restart_s.append(time.monotonic() - started)
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.stop(signal.SIGKILL)
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM (drains), wait, return the exit code (0 for a clean stop)."""
        return 0 if self.proc is None else self.proc.stop(signal.SIGTERM, timeout=300)

    def log(self) -> str:
        return "" if self.proc is None else self.proc.log()[-4000:]


class KillLoop(threading.Thread):
    """SIGKILL `target` after a random 2-10 s of service, restart it, again, until `stop` is set (or
    `max_kills` kills)."""

    def __init__(self, target: Supervised, stop: threading.Event, seed: int,
                 interval_s: tuple[float, float] = (2.0, 10.0), max_kills: int = 0) -> None:
        super().__init__(name=f"kill-{target.command}", daemon=True)
        self.target, self.stop_event, self.rng, self.interval_s = target, stop, random.Random(seed), interval_s
        self.max_kills = max_kills  # 0: until `stop`
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop_event.wait(self.rng.uniform(*self.interval_s)):
            if self.max_kills and self.target.kills >= self.max_kills:
                return
            self.target.kill()
            try:
                self.target.start()
            except RuntimeError as exc:  # reported by the test: a restart must always work
                self.errors.append(str(exc)[-2000:])
                return


def children_rss_bytes(pid: int) -> int:
    """VmRSS of `pid` and its direct children (serve --workers), bytes."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def open_fds(pid: int) -> tuple[int, int]:
    """(all open fds, fds other than the embedded ClickHouse's per-thread /proc/<pid>/task/<tid>/*
    handles: chDB keeps three open per thread of its pools, so those follow the thread count)."""
    total = other = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            total += 1
            with contextlib.suppress(OSError):
                other += "/task/" not in os.readlink(f"/proc/{pid}/fd/{fd}")
    return total, other


def threads(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def spool_segments(spool: Path) -> int:
    """Segment files (sealed and open) under a spool directory and its worker folders."""
    return sum(1 for path in spool.rglob("*") if path.suffix in (".seg", ".open"))


# -- load -------------------------------------------------------------------------------------

class LoadThread(threading.Thread):
    """`load.driver.drive` (what `clickstream load` runs) in a thread of its own; `ledger` when done."""

    def __init__(self, url: str, traffic: Traffic, *, rate: float, seed: int, stitch_token: str = "",
                 concurrency: int = 32) -> None:
        super().__init__(name="load", daemon=True)
        self.url, self.traffic, self.rate, self.seed = url, traffic, rate, seed
        self.stitch_token, self.concurrency = stitch_token, concurrency
        self.ledger: Ledger | None = None
        self.error: BaseException | None = None
        self.started_at = 0.0

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            self.ledger = asyncio.run(drive(self.url, self.traffic, seed=self.seed, rate=self.rate,
                                            concurrency=self.concurrency, stitch_token=self.stitch_token))
        except BaseException as exc:  # surfaced by result()
            self.error = exc

    def result(self, timeout_s: float) -> Ledger:
        self.join(timeout_s)
        if self.error is not None:
            raise self.error
        assert self.ledger is not None, "the load driver did not finish"
        return self.ledger


@dataclasses.dataclass
class LeadLedger:
    """What a stitcher answered: lead_id -> event for every 201/200, and the leads never answered."""

    stitched: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    created: int = 0
    repeats: int = 0
    unanswered_attempts: int = 0
    abandoned: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)


async def _stitch_all(url: str, leads: list[Lead], rate: float, ledger: LeadLedger) -> None:
    headers = {"Authorization": f"Bearer {STITCH}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def one(lead: Lead) -> None:
            # retried like an application's conversion hook would: until answered, for up to LEAD_RETRY_S
            deadline = time.monotonic() + LEAD_RETRY_S
            attempt = 0
            while time.monotonic() < deadline:
                attempt += 1
                try:
                    async with http.post(f"{url}/stitch", data=orjson.dumps(lead.body()), headers=headers) as r:
                        status, content = r.status, await r.read()
                except (TimeoutError, aiohttp.ClientError):
                    ledger.unanswered_attempts += 1
                    await asyncio.sleep(min(2.0, 0.05 * 2 ** min(attempt, 6)))
                    continue
                if status >= 500:
                    await asyncio.sleep(1.0)
                    continue
                if status not in (200, 201):
                    ledger.unexpected.append(f"{lead.lead_id}: HTTP {status} {content[:200]!r}")
                    return
                ledger.created += status == 201
                ledger.repeats += status == 200
                ledger.stitched[lead.lead_id] = orjson.loads(content)
                return
            ledger.abandoned.append(lead.lead_id)

        tasks = []
        for lead in leads:
            tasks.append(asyncio.create_task(one(lead)))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)


def stitch_leads(url: str, leads: list[Lead], rate: float) -> LeadLedger:
    """POST every lead to `url`/stitch at `rate` leads/s, retrying unanswered and 5xx attempts."""
    ledger = LeadLedger()
    asyncio.run(_stitch_all(url, leads, rate, ledger))
    return ledger


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `condition` until truthy (a deadline against hanging, not a pass condition)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def spool_drained(spool: Path) -> bool:
    """No sealed segment and no non-empty open one left (everything reached ClickHouse)."""
    return not any(p.stat().st_size for p in spool.rglob("*") if p.suffix in (".seg", ".open") and p.exists())


# -- audit ------------------------------------------------------------------------------------

@contextlib.contextmanager
def chdb_query(path: Path) -> Iterator[Query]:
    """A Query on the embedded ClickHouse at `path` (no process may hold it)."""
    client = connect(f"chdb://{path}")
    try:
        def query(sql: str) -> list[dict[str, Any]]:
            result = client.query(sql)
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

        yield query
    finally:
        client.close()


def reconcile_problems(data_dir: Path, site: str) -> list[str]:
    """`clickstream reconcile --site <site>` on a stopped deployment's data directory: every roll-up the
    fold built (reports/reconcile.py: session_facts, the day roll-ups, variant_daily) recomputed from
    `events` and compared per table and day. [] when it exits 0, else its report as the problems.
    No process may hold the embedded ClickHouse (the test stops them first, and closes its own client)."""
    done = subprocess.run([sys.executable, "-m", "clickstream.cli", "reconcile", "--site", site, "--no-progress",
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode == 0:
        checked = re.search(r"^(\d+) day\(s\) of .* checked", done.stdout, re.MULTILINE)
        if checked and int(checked.group(1)) > 0 and "PENDING" not in done.stdout:
            return []
        return [f"clickstream reconcile checked no day or left a roll-up pending: {done.stdout!r}"]
    return [f"clickstream reconcile exit {done.returncode}: {line}"
            for line in (done.stdout + done.stderr).strip().splitlines()[-20:]]


def recount_problems(query: Query, site: str) -> list[str]:
    """Every session whose roll-up (`sessions`, fed by its materialized view) differs from a recount
    over `events` (page views, events, start, end). The fold's roll-ups are `reconcile_problems`'."""
    rolled = {r["session_id"]: r for r in query(
        f"SELECT session_id, sum(pageviews) AS pageviews, sum(events) AS events, min(started_at) AS started, "
        f"max(ended_at) AS ended FROM sessions WHERE site_id = '{site}' GROUP BY session_id")}
    counted = {r["session_id"]: r for r in query(
        f"SELECT session_id, countIf(type = 'page_view') AS pageviews, count() AS events, min(ts) AS started, "
        f"max(ts) AS ended FROM events WHERE site_id = '{site}' GROUP BY session_id")}
    problems = [f"session {sid}: roll-up {rolled.get(sid)} != recount {counted.get(sid)}"
                for sid in sorted(set(rolled) | set(counted)) if rolled.get(sid) != counted.get(sid)]
    return problems


@dataclasses.dataclass
class Accounting:
    """received = accepted + rejected (by reason); accepted = rows in events + in flight + dead letters."""

    sent: int
    received: int
    accepted: int
    rejected_by_reason: dict[str, int]
    kept_by_reason: dict[str, int]
    in_events: int
    in_flight: int
    dead_letters: int
    unanswered: int

    def problems(self) -> list[str]:
        out = []
        if self.received != self.accepted + sum(self.rejected_by_reason.values()):
            out.append(f"received {self.received} != accepted {self.accepted} + rejected {self.rejected_by_reason}")
        if self.sent != self.received + self.unanswered:
            out.append(f"sent {self.sent} != received {self.received} + never answered {self.unanswered}")
        if self.rejected_by_reason != self.kept_by_reason:
            out.append(f"rejected by reason {self.rejected_by_reason} != kept in rejected/ {self.kept_by_reason}")
        if self.accepted != self.in_events + self.in_flight + self.dead_letters:
            out.append(f"accepted {self.accepted} != in events {self.in_events} + in flight {self.in_flight} "
                       f"+ dead letters {self.dead_letters}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def accounting(query: Query, ledger: Ledger, traffic: Traffic, data_dir: Path) -> Accounting:
    """The accounting identity of one run, from the ledger, rejected/, the spool and ClickHouse."""
    site = traffic.config.site_id
    ids = {e.lower() for e in ledger.accepted}
    found: set[str] = set()
    for k in range(16):
        found |= {r["id"] for r in query(f"SELECT DISTINCT toString(event_id) AS id FROM events WHERE site_id = "
                                          f"'{site}' AND cityHash64(event_id) % 16 = {k}")}
    in_flight = set(spool_event_ids(data_dir / "spool"))
    (dead,) = query(f"SELECT count() AS n FROM dead_letters WHERE position(payload, '{site}') > 0")
    sent_ids = {str(e.get("event_id")) for e, _ in [*traffic.events, *traffic.invalid]}
    kept: dict[str, str] = {}
    for store in [data_dir / "rejected", *sorted((data_dir / "rejected").glob("w*"))]:
        for entry in RejectedStore(store).read_all():
            event = entry.get("event")
            if isinstance(event, dict) and str(event.get("event_id")) in sent_ids:
                kept[str(event["event_id"])] = entry["reason"]
    return Accounting(
        sent=len(traffic.events) + len(traffic.invalid),
        received=len(ledger.accepted) + len(ledger.rejected),
        accepted=len(ledger.accepted),
        rejected_by_reason=dict(collections.Counter(ledger.rejected.values())),
        kept_by_reason=dict(collections.Counter(kept.values())),
        in_events=len(ids & found),
        in_flight=len(ids & in_flight),
        dead_letters=int(dead["n"]),
        unanswered=len(ledger.abandoned),
    )


_EVENT_ID = re.compile(rb'"event_id":"([0-9a-fA-F-]{36})"')


def spool_event_ids(spool: Path) -> list[str]:
    """The event ids still in a spool (and its worker folders): what is in flight."""
    out: list[str] = []
    for directory in [spool, *sorted(p for p in spool.glob("w*") if p.is_dir())]:
        if not directory.is_dir():
            continue
        for record in SpoolReader(directory).iter_all():
            match = _EVENT_ID.search(record.payload)
            out.append(match.group(1).decode().lower() if match else "?")
    return out


def full_audit(query: Query, ledger: Ledger, traffic: Traffic, data_dir: Path) -> tuple[list[str], Accounting]:
    """load.audit's exact audit (each acknowledged event once, nothing unacknowledged, rejections kept,
    every view = the model's ground truth, leads as frozen), the recount, and the accounting identity."""
    problems = audit(query, ledger, Truth(traffic), data_dir=data_dir)
    problems += recount_problems(query, traffic.config.site_id)
    books = accounting(query, ledger, traffic, data_dir)
    return problems + books.problems(), books


def latency_ms(values_s: list[float], q: float) -> float:
    ordered = sorted(values_s)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2) if ordered else 0.0


def relay_idle(url: str) -> bool:
    """True when the stitcher at `url` has no lead waiting for ClickHouse in its outbox (its /metrics)."""
    metrics = get(url + "/metrics")
    return metrics is not None and re.search(
        r'^clickstream_stitcher_relay_pending\{target="clickhouse"\} 0\.0$', metrics.text, re.MULTILINE) is not None


def get(url: str, timeout_s: float = 2.0) -> httpx.Response | None:
    """GET `url`, or None when nothing answers within `timeout_s` (a stopped or dead process)."""
    try:
        return httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError:
        return None
