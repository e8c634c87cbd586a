"""Definition versions of the roll-ups: which version each table holds, and the build of a new one.

Every roll-up the fold writes (reports/fold.py TABLES) has a definition version, declared in code next
to its SQL (reports/fold.py VERSIONS). The version a table was built with is written on the table
itself, as its comment (`roll-up definition version N`, `system.tables.comment`; sql/0120_rollup_versions.sql
wrote version 1 on the tables of 0101 and 0103): it moves with the table's data when tables are
exchanged, so it can never disagree with the rows after a crash.

When the declared version differs from the stored one, the table is *pending*: the fold builds the
declared version in a twin table, `fold_next_<table>` (same structure, comment = the declared version),
day by day, while the views keep reading `<table>`, the old version, whole:

- every day the fold rebuilds (dirty days) goes into the twin for a pending table, not into the old
  version (the old SQL is no longer in the code; the old version's numbers stay as they were);
- a few days of history per run (`BACKFILL_DAYS_PER_RUN`, or all of them in `reconcile --repair`);
  each built day is logged in `rollup_backfill` under the twin's UUID, after a start row written when
  the twin was made (a twin recreated after a crash or a second change is a new build: nothing is taken
  from an earlier one; a table named like a twin without a start row, e.g. the old version a crash left
  between exchange and drop, is dropped, not resumed);
- when every day of `events` (and of `variant_exposures` and `lead_events`) is in the twin,
  `EXCHANGE TABLES <table> AND fold_next_<table>` switches every reader at once (atomic, Atomic
  database engine), then the old version (now the twin) is dropped.

A reader sees the old version or the new one, never a mix of days. A table without a version comment,
or with another one, is adopted at the declared version on an installation the fold never ran on (a new
directory: the fold's history backfill fills it); on one the fold ran on, it is pending (a roll-up added
to an existing installation is built from history the same way).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import uuid
from collections.abc import Iterable, Mapping

from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

#: The comment that records a table's definition version.
COMMENT = "roll-up definition version {version}"
_VERSION = re.compile(r"roll-up definition version (\d+)")
#: Prefix of the twin in which a pending table's declared version is built.
NEXT_PREFIX = "fold_next_"
#: Days of history a fold run adds to a pending build (the dirty days come first, at the fold's interval).
BACKFILL_DAYS_PER_RUN = 7
_SETTINGS = {"async_insert": 0, "insert_deduplicate": 0}
#: The day of the row that marks a twin as created by `prepare` (never a day of history).
STARTED = dt.date(1970, 1, 1)


@dataclasses.dataclass(frozen=True)
class Build:
    """A pending table: `stored` version (None: no comment), `declared` version built into `twin`
    (`build_id`: the twin's UUID, the key of its progress in `rollup_backfill`)."""

    table: str
    stored: int | None
    declared: int
    build_id: uuid.UUID

    @property
    def twin(self) -> str:
        return NEXT_PREFIX + self.table


@dataclasses.dataclass(frozen=True)
class Pending:
    """What `clickstream reconcile` reports of a pending table: versions and days built so far."""

    table: str
    stored: int | None
    declared: int
    days_built: int
    days_total: int

    def __str__(self) -> str:
        return (f"{self.table}: live version {self.stored or 'none'}, declared {self.declared}: building "
                f"({self.days_built} of {self.days_total} day(s)); not compared, the views read the live version")


def _tables(client: Client, names: Iterable[str]) -> dict[str, tuple[str, uuid.UUID]]:
    """name -> (comment, uuid) of the tables of `names` that exist."""
    rows = client.query("SELECT name, comment, uuid FROM system.tables WHERE database = currentDatabase() "
                        "AND name IN {names:Array(String)}", parameters={"names": list(names)}).result_rows
    return {str(n): (str(c), u if isinstance(u, uuid.UUID) else uuid.UUID(str(u))) for n, c, u in rows}


def columns(client: Client, tables: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
    """table -> its (column, type) list in order, for the existing tables of `tables`."""
    rows = client.query("SELECT table, groupArray((name, type)) FROM (SELECT table, name, type FROM system.columns "
                        "WHERE database = currentDatabase() AND table IN {t:Array(String)} ORDER BY table, position) "
                        "GROUP BY table", parameters={"t": list(tables)}).result_rows
    return {str(t): [(str(n), str(ty)) for n, ty in cols] for t, cols in rows}


def version_of(comment: str) -> int | None:
    """The definition version a table comment records, or None."""
    found = _VERSION.search(comment)
    return int(found.group(1)) if found else None


def stored_versions(client: Client, tables: Iterable[str]) -> dict[str, int | None]:
    """table -> the version it holds (None: unversioned), for the existing tables of `tables`."""
    return {name: version_of(comment) for name, (comment, _) in _tables(client, tables).items()}


def stamp(client: Client, table: str, version: int) -> None:
    """Record on `table` that it holds `version` (a metadata change: no row is rewritten)."""
    client.command(f"ALTER TABLE {table} MODIFY COMMENT '{COMMENT.format(version=int(version))}'")


def prepare(client: Client, declared: Mapping[str, int], *, fresh: bool, create: bool = True,
            depends: Mapping[str, Iterable[str]] | None = None) -> dict[str, Build]:
    """The pending tables of `declared` (table -> version, in build order), each with its twin ready
    (unless not `create`).

    A table is pending when it holds another version than the declared one, or when a table it is built
    from (`depends`: table -> tables, earlier in `declared`) is pending: its numbers change with them.
    Adopts every table at its declared version when `fresh` (the fold never ran: nothing was built with
    another definition, e.g. the version 1 that sql/0120_rollup_versions.sql stamps on a new directory),
    drops a twin left by a finished switch or by an earlier declared version, creates a missing twin as
    an empty copy of the table with the declared version's comment.
    """
    found = _tables(client, [*declared, *(NEXT_PREFIX + t for t in declared)])
    shapes = columns(client, found)
    builds: dict[str, Build] = {}
    for table, version in declared.items():
        if table not in found:
            continue
        stored = version_of(found[table][0])
        if stored != version and fresh:  # no row was built by any other definition: nothing to rebuild
            stamp(client, table, version)
            stored = version
        twin = NEXT_PREFIX + table
        twin_version = version_of(found[twin][0]) if twin in found else None
        current = stored == version and not any(d in builds for d in (depends or {}).get(table, ()))
        # a twin of another version, of the table before a migration changed its columns, or not made by
        # prepare (the old version a crash left between exchange and drop, whose comment may be the same
        # when only a table it is built from changed): start anew
        if twin in found and (current or twin_version != version or shapes.get(twin) != shapes.get(table)
                              or not _started(client, found[twin][1])):
            if create:
                client.command(f"DROP TABLE IF EXISTS {twin} SYNC")
            found.pop(twin)
        if current:
            continue
        if twin not in found:
            if not create:
                builds[table] = Build(table, stored, version, uuid.UUID(int=0))
                continue
            if stored is not None and stored > version:
                log.warning("roll-up %s holds definition version %d, the code declares %d: rebuilding it at %d",
                            table, stored, version, version)
            client.command(f"CREATE TABLE {twin} AS {table}")
            stamp(client, twin, version)
            found.update(_tables(client, [twin]))
            client.insert("rollup_backfill", [[table, version, found[twin][1], STARTED]],
                          column_names=["table_name", "version", "build_id", "day"], settings=_SETTINGS)
            log.info("roll-up %s: building definition version %d (live: %s) in %s", table, version, stored, twin)
        builds[table] = Build(table, stored, version, found[twin][1])
    return builds


def _started(client: Client, build_id: uuid.UUID) -> bool:
    return bool(client.query("SELECT count() FROM rollup_backfill WHERE build_id = {b:UUID} AND day = {d:Date}",
                             parameters={"b": build_id, "d": STARTED}).result_rows[0][0])


def history_days(client: Client) -> set[dt.date]:
    """Every day a roll-up can have rows for: the UTC days of `events`, of first exposures and of leads."""
    rows = client.query("SELECT DISTINCT toDate(ts) FROM events UNION DISTINCT "
                        "SELECT DISTINCT toDate(first_exposed_at) FROM variant_exposures UNION DISTINCT "
                        "SELECT DISTINCT toDate(occurred_at) FROM lead_events").result_rows
    return {day for (day,) in rows}


def built_days(client: Client, build: Build) -> set[dt.date]:
    """The days already in `build`'s twin."""
    rows = client.query("SELECT DISTINCT day FROM rollup_backfill WHERE build_id = {b:UUID} AND day != {d:Date}",
                        parameters={"b": build.build_id, "d": STARTED}).result_rows
    return {day for (day,) in rows}


def remaining_days(client: Client, builds: Mapping[str, Build]) -> list[dt.date]:
    """The days of history some pending build still lacks, oldest first."""
    if not builds:
        return []
    history = history_days(client)
    missing: set[dt.date] = set()
    for build in builds.values():
        missing |= history - built_days(client, build)
    return sorted(missing)


def record(client: Client, builds: Mapping[str, Build], day: dt.date) -> None:
    """Log that `day` is in the twin of every build of `builds`."""
    if builds:
        client.insert("rollup_backfill", [[b.table, b.declared, b.build_id, day] for b in builds.values()],
                      column_names=["table_name", "version", "build_id", "day"], settings=_SETTINGS)


def switch(client: Client, build: Build) -> None:
    """Make `build`'s twin the table every reader reads (one atomic exchange), then drop the old version.

    A crash between the two leaves the old version in the twin, with its own comment: the next
    `prepare` drops it (the table's comment then says the declared version). Switch the tables built
    from another before it (a crash in between leaves that one pending: they are built again)."""
    client.command(f"EXCHANGE TABLES {build.table} AND {build.twin}")
    client.command(f"DROP TABLE IF EXISTS {build.twin} SYNC")
    log.info("roll-up %s: definition version %d is live (was %s)", build.table, build.declared, build.stored)


def progress(client: Client, builds: Mapping[str, Build]) -> list[Pending]:
    """Each pending build with the days built and the days of history (for reconcile)."""
    if not builds:
        return []
    total = len(history_days(client))
    return [Pending(b.table, b.stored, b.declared, len(built_days(client, b)) if b.build_id.int else 0, total)
            for b in builds.values()]
