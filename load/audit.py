"""Audit a load run: nothing lost, nothing duplicated, every rejection kept, views = ground truth.

Reads ClickHouse through a `Query` callable (reports.query.port_rows_query: the query port of a
running serve) and compares with the run's ledger and `load.model.Truth`. Every difference is
returned as one human-readable line; an empty list is a clean audit.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from pathlib import Path
from typing import Any

from collector.rejected import RejectedStore
from load.driver import Ledger
from load.model import Truth
from reports.query import RowsQuery as Query

CHUNKS = 16
_SAFE_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def wait_for_flush(query: Query, site: str, expected_events: int, expected_leads: int,
                   timeout_s: float = 300) -> float:
    """Poll until ClickHouse holds the expected events and leads of `site` (or the count stops
    moving for 10 s, or `timeout_s`), then until a fold run started after that (the views read the
    roll-ups it builds, reports/fold.py); return seconds waited."""
    started = time.monotonic()
    _wait_for_events(query, site, expected_events, expected_leads, timeout_s)
    (now,) = query("SELECT toString(now64(6, 'UTC')) AS t")
    while time.monotonic() - started < timeout_s:
        (row,) = query(f"SELECT count() AS n FROM fold_runs WHERE watermark > toDateTime64('{now['t']}', 6, 'UTC')")
        if row["n"]:
            break
        time.sleep(0.25)
    return time.monotonic() - started


def _wait_for_events(query: Query, site: str, expected_events: int, expected_leads: int, timeout_s: float) -> None:
    started = time.monotonic()
    last, last_change = -1, started
    while time.monotonic() - started < timeout_s:
        (row,) = query(f"SELECT (SELECT count() FROM events WHERE site_id = '{site}') AS e, "
                       f"(SELECT count() FROM lead_events WHERE site_id = '{site}') AS l")
        if row["e"] >= expected_events and row["l"] >= expected_leads:
            break
        if row["e"] != last:
            last, last_change = row["e"], time.monotonic()
        elif time.monotonic() - last_change > 10:
            break
        time.sleep(0.25)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _diff_table(name: str, want: dict[Any, dict[str, Any]], got: dict[Any, dict[str, Any]]) -> list[str]:
    out = []
    for key in sorted(set(want) | set(got), key=str):
        if key not in got:
            out.append(f"{name}: missing row {key} (expected {want[key]})")
        elif key not in want:
            out.append(f"{name}: unexpected row {key}: {got[key]}")
        else:
            for column, value in want[key].items():
                if not _close(value, got[key].get(column)):
                    out.append(f"{name} {key}: {column} = {got[key].get(column)!r}, expected {value!r}")
    return out


def _ms(text: Any) -> int:
    value = text if isinstance(text, dt.datetime) else dt.datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() * 1000)


def audit(query: Query, ledger: Ledger, truth: Truth, *, data_dir: Path | None = None) -> list[str]:
    """Every difference between what was acknowledged, what ClickHouse holds and the ground truth."""
    site = truth.site
    if not _SAFE_SITE.match(site):
        raise ValueError(f"unsafe site id {site!r}")
    problems: list[str] = list(ledger.unexpected)
    where = f"site_id = '{site}'"

    # 1. every acknowledged event exactly once, nothing else
    found: dict[str, int] = {}
    for k in range(CHUNKS):
        for row in query(f"SELECT toString(event_id) AS id, count() AS n FROM events WHERE {where} "
                         f"AND cityHash64(event_id) % {CHUNKS} = {k} GROUP BY id"):
            found[row["id"]] = row["n"]
    accepted = {e.lower() for e in ledger.accepted}
    lost = accepted - set(found)
    duplicated = {i for i, n in found.items() if n > 1}
    extra = set(found) - accepted
    problems += [f"lost: {len(lost)} acknowledged events not in events, e.g. {sorted(lost)[:5]}"] if lost else []
    problems += [f"duplicated: {len(duplicated)} events more than once, e.g. {sorted(duplicated)[:5]}"] \
        if duplicated else []
    problems += [f"unexpected: {len(extra)} events never acknowledged, e.g. {sorted(extra)[:5]}"] if extra else []

    # 2. every rejected event kept in rejected/ with its reason (rejected/w<i>/ of `serve --workers`)
    if data_dir is not None and ledger.rejected:
        stores = [data_dir / "rejected", *sorted((data_dir / "rejected").glob("w*"))]
        kept = {str((entry.get("event") or {}).get("event_id")): entry["reason"]
                for store in stores for entry in RejectedStore(store).read_all()
                if isinstance(entry.get("event"), dict)}
        for event_id, reason in ledger.rejected.items():
            if kept.get(event_id) != reason:
                problems.append(f"rejected event {event_id} ({reason}) not kept in rejected/ "
                                f"(found {kept.get(event_id)})")

    # 3. views against the ground truth
    problems += view_problems(query, truth)

    # 4. every lead frozen as the ground truth says
    for lead in truth.traffic.leads:
        event = ledger.stitched.get(lead.lead_id)
        if event is None:
            continue
        want = truth.lead_attribution(lead)
        for field in ("landing_path", "variants"):
            if event.get(field) != want[field]:
                problems.append(f"lead {lead.lead_id}: {field} = {event.get(field)!r}, expected {want[field]!r}")
        for touch in ("first_touch", "last_touch"):
            got_touch = event.get(touch) or {}
            for key in ("channel", "utm_source", "utm_medium", "utm_campaign", "landing_path"):
                if got_touch.get(key) != want[touch][key]:
                    problems.append(f"lead {lead.lead_id}: {touch}.{key} = {got_touch.get(key)!r}, "
                                    f"expected {want[touch][key]!r}")
    return problems


def view_problems(query: Query, truth: Truth) -> list[str]:
    """Every difference between the dashboard views (v_sessions, v_daily_traffic, v_landing_pages,
    v_channels, v_variant_lift) of `truth.site`, read through `query`, and the ground truth."""
    site = truth.site
    if not _SAFE_SITE.match(site):
        raise ValueError(f"unsafe site id {site!r}")
    where = f"site_id = '{site}'"
    problems: list[str] = []
    want_sessions = {s["session_id"]: {k: v for k, v in s.items() if k not in ("site_id", "duration_s")}
                     for s in truth.sessions().values()}
    got_sessions: dict[Any, dict[str, Any]] = {}
    for k in range(CHUNKS):
        for row in query(f"SELECT * FROM v_sessions WHERE {where} AND cityHash64(session_id) % {CHUNKS} = {k}"):
            row["started_at"], row["ended_at"] = _ms(row["started_at"]), _ms(row["ended_at"])
            got_sessions[row["session_id"]] = row
    problems += _diff_table("v_sessions", want_sessions, got_sessions)

    daily = truth.daily_traffic()
    got_daily = {str(r["day"]): r for r in query(f"SELECT * FROM v_daily_traffic WHERE {where}")}
    problems += _diff_table("v_daily_traffic", daily, got_daily)

    got_landing = {r["landing_path"]: r for r in query(f"SELECT * FROM v_landing_pages WHERE {where}")}
    problems += _diff_table("v_landing_pages", truth.landing_pages(), got_landing)

    got_channels = {(r["channel"], r["utm_source"], r["utm_medium"], r["utm_campaign"]): r
                    for r in query(f"SELECT * FROM v_channels WHERE {where}")}
    problems += _diff_table("v_channels", truth.channels(), got_channels)

    got_lift = {(r["experiment_id"], r["variant_id"]): r for r in query(f"SELECT * FROM v_variant_lift WHERE {where}")}
    problems += _diff_table("v_variant_lift", truth.variant_counts(), got_lift)
    return problems
