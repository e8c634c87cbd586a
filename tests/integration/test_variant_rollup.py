"""`variant_daily` and the lift views are exact: every row of v_variant_lift and of v_variant_lift_range
(two sites, several ranges) equals an independent Python computation over the same events and leads,
after late events (an earlier exposure to another variant arriving after its day was folded, a lead
arriving days after the exposure), a retried insert and equal-timestamp exposures; reconcile sees the
roll-up clean, then a corrupted day, and `repair` rebuilds it.

Definitions computed here (sql/0103_variant_rollup.sql): a visitor's variant in an experiment is the
variant of their first non-bot exposure over all of history (earliest ts, ties by variant id), their day
that exposure's UTC day; a converter has a lead at or after that exposure (any time later). A range is the
cohort first exposed in it. Real chDB, the real ingest path (`events_ingest` and its materialized
views), the real fold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from statsmodels.stats.proportion import proportions_ztest

from clickstream.core.clickhouse import INSERT_SETTINGS, connect, migrate
from reports.fold import fold
from reports.reconcile import reconcile

SITES = ("a.example", "b.example")
EXPERIMENTS = {"a.example": {"hero": ("B", "control"), "cta": ("a", "b", "c")}, "b.example": {"hero": ("B", "control")}}
DAY0 = dt.date(2026, 5, 1)
DAYS = 10
RANGES = [(DAY0 + dt.timedelta(days=a), DAY0 + dt.timedelta(days=b))
          for a, b in ((0, DAYS), (0, 0), (2, 5), (7, 30), (-3, -1))]


def ms(day: dt.date, seconds: float) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000 + seconds * 1000)


def day_of(ts_ms: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).date()


def ch_time(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclasses.dataclass
class Exposure:
    site_id: str
    anonymous_id: str
    ts: int
    variants: dict[str, str]
    is_bot: int = 0
    event_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))

    def row(self, segment: str, offset: int) -> bytes:
        return orjson.dumps({
            "type": "page_view", "site_id": self.site_id, "anonymous_id": self.anonymous_id,
            "session_id": f"{self.anonymous_id}-{day_of(self.ts)}", "ts": self.ts,
            "url": f"https://{self.site_id}/", "event_id": self.event_id, "variants": self.variants,
            "received_at": self.ts, "spool_segment": segment, "spool_offset": offset,
            "user_agent": "Mozilla/5.0", "is_bot": self.is_bot,
        })


@dataclasses.dataclass
class Lead:
    site_id: str
    anonymous_id: str
    ts: int
    lead_id: str = dataclasses.field(default_factory=lambda: f"lead-{uuid.uuid4().hex[:10]}")

    def row(self) -> bytes:
        return orjson.dumps({
            "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, self.lead_id)), "lead_id": self.lead_id,
            "site_id": self.site_id, "anonymous_id": self.anonymous_id, "occurred_at": ch_time(self.ts),
            "session_id": "", "landing_path": "/", "properties": "{}", "payload": "{}", "emitted_at": ch_time(self.ts),
        })


class Store:
    """Exposures and leads as ClickHouse holds them (the insert paths) and as the test knows them."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.exposures: list[Exposure] = []
        self.leads: list[Lead] = []
        self.batches = 0

    def insert(self, batch: list[Exposure], token: str | None = None) -> str:
        self.batches += 1
        segment = f"{self.batches:017d}-test"
        token = token or segment
        self.client.raw_insert("events_ingest", None, b"\n".join(e.row(segment, i) for i, e in enumerate(batch)),
                               fmt="JSONEachRow", settings={**INSERT_SETTINGS, "insert_deduplication_token": token})
        if token == segment:
            self.exposures += batch
        return token

    def insert_leads(self, leads: list[Lead]) -> None:
        self.client.raw_insert("lead_events", None, b"\n".join(lead.row() for lead in leads), fmt="JSONEachRow",
                               settings={**INSERT_SETTINGS, "insert_deduplication_token": leads[0].lead_id})
        self.leads += leads


def generate(rng: random.Random, n: int) -> tuple[list[Exposure], list[Lead]]:
    exposures: list[Exposure] = []
    leads: list[Lead] = []
    for v in range(n):
        site = SITES[v % 2] if v % 3 else SITES[0]
        anon = f"v{v}"
        bot = int(v % 17 == 0)
        assigned = {exp: rng.choice(variants) for exp, variants in EXPERIMENTS[site].items()}
        times = []
        for _ in range(rng.randint(1, 4)):
            t = ms(DAY0 + dt.timedelta(days=rng.randrange(DAYS)), rng.uniform(0, 86_399))
            shown = {exp: var for exp, var in assigned.items() if rng.random() < 0.8} or dict(assigned)
            if rng.random() < 0.1:  # contamination: another variant shown later (or at the same ms)
                exp = rng.choice(sorted(shown))
                shown[exp] = rng.choice(EXPERIMENTS[site][exp])
            exposures.append(Exposure(site, anon, t, shown, bot))
            times.append(t)
            if rng.random() < 0.15:  # equal timestamps, other variants: the tie goes to the smaller id
                exposures.append(Exposure(site, anon, t, {e: rng.choice(EXPERIMENTS[site][e]) for e in shown}, bot))
        if rng.random() < 0.35:
            first = min(times)
            when = first + rng.choice((-3_600_000, 0, 60_000, 2 * 86_400_000, 5 * 86_400_000))
            leads.append(Lead(site, anon, when))
    rng.shuffle(exposures)
    return exposures, leads


def cohort(store: Store) -> dict[tuple[str, str, str], tuple[str, dt.date, bool]]:
    """(site, experiment, visitor) -> (variant, day of first exposure, converter), from the test's events."""
    first: dict[tuple[str, str, str], tuple[int, str]] = {}
    for e in store.exposures:
        if e.is_bot:
            continue
        for exp, var in e.variants.items():
            key = (e.site_id, exp, e.anonymous_id)
            first[key] = min(first.get(key, (e.ts, var)), (e.ts, var))
    lead_times: dict[tuple[str, str], list[int]] = defaultdict(list)
    for lead in store.leads:
        lead_times[(lead.site_id, lead.anonymous_id)].append(lead.ts)
    return {key: (var, day_of(ts), any(t >= ts for t in lead_times[(key[0], key[2])]))
            for key, (ts, var) in first.items()}


def expected(store: Store, site: str | None, lo: dt.date, hi: dt.date) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(site, experiment, variant) -> the view's columns, for visitors first exposed in [lo, hi]."""
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (s, exp, _), (var, day, converted) in cohort(store).items():
        if (site is None or s == site) and lo <= day <= hi:
            counts[(s, exp, var)][0] += 1
            counts[(s, exp, var)][1] += int(converted)
    out = {}
    for (s, exp, var), (n, c) in counts.items():
        variants = sorted(v for (s2, e2, v) in counts if (s2, e2) == (s, exp))
        control = "control" if "control" in variants else variants[0]
        n0, c0 = counts[(s, exp, control)]
        row: dict[str, Any] = {"is_control": int(var == control), "visitors": n, "converters": c,
                               "conversion_rate": c / n, "control_visitors": n0, "control_converters": c0,
                               "lift": None if var == control or c0 == 0 else (c / n) / (c0 / n0) - 1}
        if var != control and 0 < c < n and 0 < c0 < n0:
            z, p = proportions_ztest([c, c0], [n, n0])
            row["z"], row["p_value"] = z, p
        elif var != control:  # ClickHouse's proportionsZTest gives nan when a rate is 0 or 1 (as 0006's view)
            row["z"] = row["p_value"] = math.nan
        out[(s, exp, var)] = row
    return out


def check(store: Store) -> int:
    """Compare every row of the views with `expected`; returns the rows compared."""
    client = store.client
    compared = 0
    cols = "site_id, experiment_id, variant_id, is_control, visitors, converters, conversion_rate, " \
           "control_visitors, control_converters, lift, z, p_value"
    queries: list[tuple[str, dict[str, Any], str | None, dt.date, dt.date]] = [
        (f"SELECT {cols} FROM v_variant_lift", {}, None, dt.date(1970, 1, 1), dt.date(2100, 1, 1))]
    for site in SITES:
        for lo, hi in RANGES:
            queries.append((f"SELECT {cols} FROM v_variant_lift_range(site = {{s:String}}, from = {{lo:Date}}, "
                            "to = {hi:Date})", {"s": site, "lo": lo, "hi": hi}, site, lo, hi))
    for sql, params, site, lo, hi in queries:
        got = {(r[0], r[1], r[2]): dict(zip(cols.split(", ")[3:], r[3:], strict=True))
               for r in client.query(sql, parameters=params).result_rows}
        want = expected(store, site, lo, hi)
        assert set(got) == set(want), (sql, params)
        for key, row in want.items():
            g = got[key]
            for name in ("is_control", "visitors", "converters", "control_visitors", "control_converters"):
                assert g[name] == row[name], (key, name, params)
            assert g["conversion_rate"] == pytest.approx(row["conversion_rate"], abs=1e-12)
            assert (g["lift"] is None) == (row["lift"] is None), (key, params)
            if row["lift"] is not None:
                assert g["lift"] == pytest.approx(row["lift"], rel=1e-9)
            if "z" in row and math.isnan(row["z"]):
                assert math.isnan(g["z"]) and math.isnan(g["p_value"]), (key, params)
            elif "z" in row:
                assert g["z"] == pytest.approx(row["z"], rel=1e-6)
                assert g["p_value"] == pytest.approx(row["p_value"], rel=1e-6, abs=1e-12)
            compared += 1
    # the range form over all days is v_variant_lift, and v_variant_lift equals the raw definition of 0006
    for site in SITES:
        whole = client.query(f"SELECT {cols} FROM v_variant_lift_range(site = {{s:String}}, from = '2000-01-01', "
                             "to = '2100-01-01') ORDER BY 2, 3", parameters={"s": site}).result_rows
        assert whole == client.query(f"SELECT {cols} FROM v_variant_lift WHERE site_id = {{s:String}} ORDER BY 2, 3",
                                     parameters={"s": site}).result_rows
    return compared


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    migrate(client)
    yield Store(client)
    client.close()


def test_lift_roll_up_is_exact_through_late_retried_and_tied_events(store: Store) -> None:
    rng = random.Random(11)
    exposures, leads = generate(rng, 600)
    late_leads = leads[len(leads) // 2:]
    half = len(exposures) // 2
    token = store.insert(exposures[:half])
    store.insert_leads(leads[: len(leads) // 2])
    assert fold(store.client) is not None
    assert check(store) > 20

    store.insert(exposures[half:])
    store.insert(exposures[:half], token=token)  # the flusher's retry of a batch that was in: dropped
    store.insert_leads(late_leads)  # leads days after the exposures they convert, after those days were folded
    assert fold(store.client) is not None
    check(store)

    # late, earlier exposures: visitors already folded on a later day move to an earlier day and variant
    cohort_now = cohort(store)
    movers = [(s, exp, anon) for (s, exp, anon), (_, day, _) in sorted(cohort_now.items())
              if day >= DAY0 + dt.timedelta(days=3) and s == SITES[0]][:15]
    assert movers
    late = []
    for s, exp, anon in movers:
        other = next(v for v in EXPERIMENTS[s][exp] if v != cohort_now[(s, exp, anon)][0])
        late.append(Exposure(s, anon, ms(DAY0 + dt.timedelta(days=rng.randrange(2)), rng.uniform(0, 86_399)),
                             {exp: other}))
    store.insert(late)
    run = fold(store.client)
    assert run is not None
    assert any(d >= DAY0 + dt.timedelta(days=3) for d in run.days)  # the movers' old days were rebuilt
    moved = cohort(store)
    assert all(moved[m][1] < DAY0 + dt.timedelta(days=2) for m in movers)
    check(store)

    # a lead alone (no new event) makes its visitor's first-exposure day dirty
    converted = {(lead.site_id, lead.anonymous_id) for lead in store.leads}
    target = next(k for k, (_, day, _) in sorted(moved.items()) if (k[0], k[2]) not in converted and day > DAY0)
    store.insert_leads([Lead(target[0], target[2], ms(DAY0 + dt.timedelta(days=DAYS + 3), 10))])
    run = fold(store.client)
    assert run is not None and moved[target][1] in run.days
    assert cohort(store)[target][2]
    check(store)
    assert reconcile(store.client).clean


def test_reconcile_recounts_and_repairs_the_lift_roll_up(store: Store) -> None:
    exposures, leads = generate(random.Random(5), 200)
    store.insert(exposures)
    store.insert_leads(leads)
    assert fold(store.client) is not None
    assert reconcile(store.client).clean
    day = DAY0 + dt.timedelta(days=4)
    store.client.command(f"INSERT INTO variant_daily (site_id, day, experiment_id, variant_id, visitors, converters) "
                         f"VALUES ('a.example', '{day}', 'hero', 'B', 5, 5)")
    report = reconcile(store.client, site="a.example")
    assert [(d.table, d.day, d.site_id) for d in report.differences] == [("variant_daily", day, "a.example")]
    with pytest.raises(AssertionError):
        check(store)
    report = reconcile(store.client, repair=True)
    assert report.repaired == [day] and not report.after_repair
    check(store)
