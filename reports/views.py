"""The dashboard views answered from one roll-up each, once the roll-ups hold what that takes.

sql/0102_range_views.sql created v_daily_traffic, v_traffic_range, v_landing_pages(_range) and
v_channels(_range) merging each roll-up row's `uniqExact` visitor state, with the leads joined from
`lead_events`. Later definition versions of the roll-ups (reports/fold.py VERSIONS) hold the visitors
as Roaring bitmaps of visitor numbers (sql/0122_visitor_bitmaps.sql) and the leads of each day
(sql/0124_rollup_leads.sql): sql/rollup_views.sql reads those instead, with the same names, columns,
types and numbers, and no join (BENCHMARKS.md "Dashboard views" has what it saves).

A view cannot choose its columns at query time, and on an upgraded installation a roll-up keeps its
earlier version, with empty bitmaps and lead states, until the fold has built the new one from history
and switched it in (reports/versions.py). So `sync`, run after every fold run (reports/fold.py `fold`),
creates each view in the form its roll-up allows: sql/rollup_views.sql's from the version in NEEDS on
(and with the columns it reads), else 0102's. `CREATE OR REPLACE VIEW` swaps a definition atomically.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Final

from clickhouse_connect.driver.client import Client

from clickstream.core import resources
from clickstream.core.clickhouse import split_statements
from reports import versions

#: The views on the roll-ups' bitmaps and leads, and the migration whose views they replace.
ROLLUP_VIEWS: Final = "rollup_views.sql"
BEFORE: Final = "0102_range_views.sql"
#: roll-up -> (the first definition version that holds what ROLLUP_VIEWS reads, those columns).
NEEDS: Final[dict[str, tuple[int, tuple[str, ...]]]] = {
    "traffic_daily": (2, ("visitor_bitmap",)),
    "landing_daily": (2, ("visitor_bitmap", "leads")),
    "channel_daily": (3, ("visitor_bitmap", "leads")),
}
#: What a view's definition holds in ROLLUP_VIEWS' form only.
MARKER: Final = "groupBitmapMerge(visitor_bitmap)"

_VIEW = re.compile(r"CREATE OR REPLACE VIEW (\w+) AS")
_ROLLUP = re.compile(r"\bFROM (\w+_daily)\b")


def _statements(name: str) -> dict[str, str]:
    """view -> its CREATE statement, for the views of the SQL file `name` (of the package's sql/)."""
    out: dict[str, str] = {}
    for statement in split_statements(resources.migrations().joinpath(name).read_text()):
        if found := _VIEW.search(statement):
            out[found.group(1)] = statement
    return out


@cache
def forms() -> dict[str, tuple[str, str, str]]:
    """view -> (the roll-up it reads, its statement in ROLLUP_VIEWS, its statement in BEFORE).

    Raises ValueError when a view of ROLLUP_VIEWS does not read exactly one roll-up of NEEDS or is not
    in BEFORE."""
    before = _statements(BEFORE)
    out: dict[str, tuple[str, str, str]] = {}
    for view, statement in _statements(ROLLUP_VIEWS).items():
        rollups = set(_ROLLUP.findall(statement))
        if len(rollups) != 1 or not rollups <= set(NEEDS) or view not in before or MARKER not in statement:
            raise ValueError(f"{ROLLUP_VIEWS}: {view} must read one roll-up of NEEDS, with {MARKER}, "
                             f"and replace a view of {BEFORE}")
        out[view] = (rollups.pop(), statement, before[view])
    return out


def reads_rollups_only(client: Client) -> dict[str, bool]:
    """view -> whether its current definition is ROLLUP_VIEWS' form (the views of `forms` that exist)."""
    rows = client.query(
        "SELECT name, position(create_table_query, {marker:String}) > 0 FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {views:Array(String)}",
        parameters={"marker": MARKER, "views": sorted(forms())}).result_rows
    return {str(name): bool(on) for name, on in rows}


def ready(client: Client) -> set[str]:
    """The roll-ups of NEEDS that hold their version (stored on the table, reports/versions.py) and
    columns."""
    stored = versions.stored_versions(client, NEEDS)
    columns = versions.columns(client, NEEDS)
    return {table for table, (version, needed) in NEEDS.items()
            if (stored.get(table) or 0) >= version and set(needed) <= {name for name, _ in columns.get(table, [])}}


def sync(client: Client) -> list[str]:
    """Create each existing view of `forms` in the form its roll-up allows (`ready`), where it is in the
    other one. Returns the views re-created."""
    rollups_ready = ready(client)
    changed = []
    for view, on in reads_rollups_only(client).items():
        rollup, after, before = forms()[view]
        if on != (rollup in rollups_ready):
            client.command(after if rollup in rollups_ready else before)
            changed.append(view)
    return sorted(changed)
