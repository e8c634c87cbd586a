"""`clickstream reconcile`: recompute the roll-ups from `events` and compare, per table, day and site.

The recount is the fold's own build (reports/fold.py `build_day`: FACTS_SQL and ROLLUP_SQL into the
staging tables), so "recompute is the auditor" uses the definitions the views are built with. Each
(table, day, site) is compared by its row count and an order-independent fingerprint: the sum
(UInt64, wrapping) of cityHash64 over each row's values, uniqExact states finalized to their count
(a state's bytes may differ for equal sets). A difference names the table, the day, the site and both
row counts. `--repair` swaps the recount in (the fold's `swap_day`: `REPLACE PARTITION`, atomic per
table and day) for every day with a difference, then checks those days again.

Definition versions (reports/versions.py): the recount is the definition the code declares, so a table
whose declared version is not yet live (the fold is still building it) is not compared: the report
lists it as pending, with the days built so far. `--repair` first completes those builds (every missing
day of history into the twin, then the switch), then compares every table.

The comparison and the repair run under the fold's lease (they share its staging tables), so a fold
never runs at the same time. Leads are not rolled up by day of the lead (the views read `lead_events`
for the range); they count in `variant_daily` as converters of their visitor's first-exposure day,
which the recount rebuilds like any other roll-up.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from clickhouse_connect.driver.client import Client

from clickstream.core.cluster import open_configured
from clickstream.core.settings import Settings
from reports import versions
from reports.fold import (
    FACTS_COLUMNS,
    ROLLUP_COLUMNS,
    STAGING_PREFIX,
    TABLES,
    backfill,
    build_day,
    locked,
    prepare_versions,
    swap_day,
)
from reports.query import held_by_another_process

#: The day column of each table and the row values fingerprinted (uniqExact states of visitors and leads as
#: their count: a state's bytes follow the order its hash set was filled in; visitor bitmaps as their
#: visitor numbers, sorted: bitmapToArray of a bitmap under 32 numbers, ClickHouse's small set, lists them
#: in the order they were added, which differs between two builds of the same day).
DAY_COLUMN = {"session_facts": "toDate(started_at)", "traffic_daily": "day", "landing_daily": "day",
              "channel_daily": "day", "variant_daily": "day", "page_daily": "day", "event_type_daily": "day",
              "event_prop_daily": "day"}
#: Roll-ups whose `visitors` is a plain count (a visitor is in one day of an experiment), not a state.
_COUNTED = {"variant_daily"}
_VALUES = {"session_facts": FACTS_COLUMNS,
           **{t: c if t in _COUNTED else c.replace("visitors", "finalizeAggregation(visitors)")
              .replace("visitor_bitmap", "arraySort(bitmapToArray(visitor_bitmap))")
              .replace("leads", "finalizeAggregation(leads)")
              for t, c in ROLLUP_COLUMNS.items()}}


@dataclasses.dataclass(frozen=True)
class Difference:
    """One (table, day, site) whose stored rows differ from the recount: counts of rows in each."""

    table: str
    day: dt.date
    site_id: str
    stored_rows: int
    recount_rows: int

    def __str__(self) -> str:
        return (f"{self.table} {self.day} {self.site_id}: stored {self.stored_rows} rows, recount "
                f"{self.recount_rows} rows, contents differ" if self.stored_rows == self.recount_rows else
                f"{self.table} {self.day} {self.site_id}: stored {self.stored_rows} rows, recount {self.recount_rows}")


@dataclasses.dataclass
class Report:
    """What a reconcile saw: days checked, differences found, days repaired (and still different after),
    tables whose declared definition version is still being built (`pending`: not compared) and those
    the repair switched to it (`switched`)."""

    days: list[dt.date] = dataclasses.field(default_factory=list)
    differences: list[Difference] = dataclasses.field(default_factory=list)
    repaired: list[dt.date] = dataclasses.field(default_factory=list)
    after_repair: list[Difference] = dataclasses.field(default_factory=list)
    pending: list[versions.Pending] = dataclasses.field(default_factory=list)
    switched: list[str] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.differences


class LeaseBusy(RuntimeError):
    """Another process holds the fold lease (a fold or a reconcile runs): try again in a moment."""


def _fingerprints(client: Client, table: str, day: dt.date, site: str | None,
                  source: str = "") -> dict[str, tuple[int, int]]:
    """site -> (rows, fingerprint) of `table`'s `day` as stored in `source` (default: the table itself)."""
    where = f"{DAY_COLUMN[table]} = {{day:Date}}" + (" AND site_id = {site:String}" if site is not None else "")
    rows = client.query(
        f"SELECT site_id, count(), sum(cityHash64(toString(tuple({_VALUES[table]})))) FROM {source or table} "
        f"WHERE {where} "
        "GROUP BY site_id", parameters={"day": day, "site": site or ""}).result_rows
    return {str(s): (int(n), int(h)) for s, n, h in rows}


def compare_day(client: Client, day: dt.date, site: str | None = None,
                skip: Collection[str] = ()) -> list[Difference]:
    """Build `day`'s recount in the staging tables and compare it with every roll-up but `skip` (lease held)."""
    build_day(client, day)
    out = []
    for table in TABLES:
        if table in skip:
            continue
        stored = _fingerprints(client, table, day, site)
        recount = _fingerprints(client, table, day, site, source=STAGING_PREFIX + table)
        for s in sorted(set(stored) | set(recount)):
            if stored.get(s) != recount.get(s):
                out.append(Difference(table, day, s, stored.get(s, (0, 0))[0], recount.get(s, (0, 0))[0]))
    return out


def days_between(client: Client, first: dt.date | None, last: dt.date | None) -> list[dt.date]:
    """Every day from `first` to `last` (default: the first and last day of `events` and the roll-ups)."""
    if first is None or last is None:
        lo, hi = client.query(
            "SELECT min(d), max(d) FROM (SELECT toDate(ts) AS d FROM events UNION ALL "
            "SELECT toDate(started_at) FROM session_facts UNION ALL SELECT day FROM traffic_daily UNION ALL "
            "SELECT day FROM landing_daily UNION ALL SELECT day FROM channel_daily UNION ALL "
            "SELECT day FROM variant_daily UNION ALL SELECT toDate(first_exposed_at) FROM variant_exposures "
            "UNION ALL SELECT toDate(occurred_at) FROM lead_events "
            "UNION ALL SELECT day FROM page_daily UNION ALL SELECT day FROM event_type_daily "
            "UNION ALL SELECT day FROM event_prop_daily)"
        ).result_rows[0]
        if first is None:
            first = lo
        if last is None:
            last = hi
    if first is None or last is None or first > last or first.year < 2000:
        return []
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def reconcile(client: Client, *, site: str | None = None, first: dt.date | None = None, last: dt.date | None = None,
              repair: bool = False, progress: Callable[[int, int], None] | None = None) -> Report:
    """Compare (and with `repair`, rebuild) every day of the range; `progress(done, total)` per day.

    Raises LeaseBusy when a fold or another reconcile runs, ClickHouseError on a failed query.
    """
    report = Report()
    with locked(client) as holder:
        if holder is None:
            raise LeaseBusy("a fold or another reconcile is running: try again in a moment")
        builds = prepare_versions(client, create=repair)
        if repair and builds:
            _, report.switched = backfill(client, builds, None)
            builds = {}
        report.pending = versions.progress(client, builds)
        report.days = days_between(client, first, last)
        total = len(report.days) * (2 if repair else 1)
        for i, day in enumerate(report.days):
            report.differences += compare_day(client, day, site, skip=builds)
            if progress is not None:
                progress(i + 1, total)
        if repair:
            broken = sorted({d.day for d in report.differences})
            for i, day in enumerate(broken):
                build_day(client, day)
                swap_day(client, day)
                report.repaired.append(day)
                report.after_repair += compare_day(client, day, site, skip=builds)
                if progress is not None:
                    progress(len(report.days) + i + 1, len(report.days) + len(broken))
    return report


def format_report(report: Report, names: Sequence[str] = TABLES) -> str:
    """Human-readable lines: one per difference, then a summary."""
    lines = [f"PENDING {p}" for p in report.pending]
    lines += [f"built the declared definition version of {t} and switched the views to it" for t in report.switched]
    lines += [f"DIFF {d}" for d in report.differences]
    if report.repaired:
        lines.append(f"repaired {len(report.repaired)} day(s): {', '.join(str(d) for d in report.repaired)}")
        lines += [f"STILL DIFFERENT {d}" for d in report.after_repair]
    state = "clean" if report.clean else f"{len(report.differences)} difference(s)"
    lines.append(f"{len(report.days)} day(s) of {', '.join(names)} checked: {state}")
    return "\n".join(lines)


def run_reconcile(settings: Settings, *, site: str | None, first: dt.date | None, last: dt.date | None,
                  repair: bool, progress: bool) -> Report:
    """`clickstream reconcile`: open the configured ClickHouse (migrated), reconcile with a rich
    progress bar on stderr when `progress`. Raises LeaseBusy, ClickHouseError, and RuntimeError when
    the embedded directory is held by a running serve (chDB: one process per directory)."""
    url = settings.resolved_clickhouse_url
    if url.startswith("chdb://") and held_by_another_process(Path(url.removeprefix("chdb://"))):
        raise LeaseBusy(f"{url.removeprefix('chdb://')} is held by a running serve or flusher: stop it first "
                        "(the embedded engine opens in one process at a time)")
    client = open_configured(settings)
    try:
        if not progress:
            return reconcile(client, site=site, first=first, last=last, repair=repair)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("reconcile"), BarColumn(), MofNCompleteColumn(), TextColumn("days"),
                      TimeElapsedColumn(), console=Console(stderr=True)) as bar:
            task = bar.add_task("reconcile", total=None)
            return reconcile(client, site=site, first=first, last=last, repair=repair,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))
    finally:
        client.close()
