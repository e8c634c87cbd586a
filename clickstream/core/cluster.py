"""The `sql/` migrations rendered for a ClickHouse cluster (`clickstream migrate --cluster NAME`).

The same files serve one server and a cluster; this module derives the cluster form from each
statement (clickstream.core.ddl), so a new migration needs no cluster twin of its own:

- a table that stores or receives rows (MergeTree family, Null) becomes `<name>_local`, created
  `ON CLUSTER` on every node, with a `Replicated*MergeTree` engine (Keeper path
  `/clickhouse/tables/{shard}/{database}/<name>_local`, replica `{replica}`: the macros every node
  defines), and `replicated_deduplication_window` + `_seconds` replacing
  `non_replicated_deduplication_window` (every replicated table gets them, whatever the file said);
- next to it, `<name>` becomes a `Distributed` table over `<name>_local` with a sharding key. A
  table with `site_id` and `anonymous_id` is sharded by `cityHash64(site_id, anonymous_id)`: a
  visitor's events, sessions, exposures, leads and conversions live on one shard, so per-visitor
  joins stay on the shard and distinct visitors add up exactly across shards. Other tables use
  `SHARDING_KEYS`, else a hash of their ORDER BY key (always a function of the row, never `rand()`:
  a retried batch must split across shards exactly as the first attempt did);
- a materialized view reads and writes the local tables (`FROM events_local`, `TO sessions_local`):
  it runs on the shard that received the block, so its target is co-located like its source;
- views, functions and dictionaries are created `ON CLUSTER` unchanged: views read the
  `Distributed` tables, which carry the names queries already use;
- `ALTER TABLE` goes to the local table (indexes, TTL, settings, projections), and also to the
  `Distributed` one when it changes columns; `INSERT … SELECT` (a backfill) runs once, through the
  `Distributed` tables.

Writers are unchanged: the flusher inserts into `events_ingest` and the stitcher's relay into
`lead_events`, now `Distributed` tables, with `distributed_foreground_insert = 1`
(clickstream.core.clickhouse.INSERT_SETTINGS). Why exactly-once carries over, and what the window
must exceed: deploy/README.md "Exactly once on a cluster".
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from importlib.resources.abc import Traversable

from clickhouse_connect.driver.client import Client

from clickstream.core import ddl
from clickstream.core.clickhouse import (
    DATABASE,
    SCHEMA_MIGRATIONS_COLUMNS,
    MigrationTarget,
    migrations,
    open_clickhouse,
    split_statements,
)
from clickstream.core.ddl import Span, Statement, UnsupportedStatement, quote_name
from clickstream.core.settings import Settings

#: Sharding key of tables whose rows belong to a visitor (docs/architecture.md "Definitions").
VISITOR_KEY = "cityHash64(site_id, anonymous_id)"
#: Tables without a visitor that receive inserts, and their key: a function of the row that a retry
#: repeats (`failed_at` changes between attempts, so it must not be part of dead_letters' key).
SHARDING_KEYS: Mapping[str, str] = {"dead_letters": "cityHash64(spool_segment, spool_offset)"}
LOCAL_SUFFIX = "_local"
#: Engines whose tables get a `_local` twin on every shard and a Distributed table over them.
_ROW_ENGINES = re.compile(r"(Replicated)?\w*MergeTree|Null")


class ClusterRenderError(ValueError):
    """A migration cannot be rendered for a cluster; the message names the statement and the fix."""


@dataclasses.dataclass(frozen=True)
class ClusterOptions:
    """How to render: the cluster's name (`remote_servers`), the database and the dedup window.

    `dedup_window` (blocks) and `dedup_window_seconds` bound insert deduplication on every
    replicated table (ClickHouse merge-tree settings `replicated_deduplication_window`,
    `replicated_deduplication_window_seconds`; 26.x defaults 10000 blocks and 3600 s). A retry must
    come before the window forgets the first attempt: deploy/README.md says how to size both.
    """

    cluster: str
    database: str = DATABASE
    dedup_window: int = 10_000
    dedup_window_seconds: int = 7 * 24 * 3600

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {quote_name(self.cluster)}"


def local_name(table: str) -> str:
    return table + LOCAL_SUFFIX


def sharding_key(table: Statement) -> str:
    """The Distributed sharding key of a CREATE TABLE statement (see the module docstring).

    Raises ClusterRenderError for a table with neither a visitor, an entry in SHARDING_KEYS nor
    an ORDER BY key.
    """
    if table.name.name in SHARDING_KEYS:
        return SHARDING_KEYS[table.name.name]
    if {"site_id", "anonymous_id"} <= set(table.columns()):
        return VISITOR_KEY
    order = (table.order_by() or "").strip()
    if order.startswith("(") and order.endswith(")"):
        order = order[1:-1].strip()
    if not order or order == "tuple()":
        raise ClusterRenderError(f"table {table.name.name}: no sharding key (no site_id + anonymous_id, no ORDER BY); "
                                 "add it to clickstream.core.cluster.SHARDING_KEYS")
    return f"cityHash64({order})"


class Renderer:
    """Renders statements for a cluster, knowing every table the migrations create (`tables`)."""

    def __init__(self, options: ClusterOptions, tables: Mapping[str, Statement]) -> None:
        self.options = options
        self.tables = dict(tables)

    @classmethod
    def for_migrations(cls, options: ClusterOptions, sql_dir: Traversable | None = None) -> Renderer:
        """A renderer that knows the tables of every migration in `sql_dir` (default: the package's)."""
        tables: dict[str, Statement] = {}
        for _, _, path in migrations(sql_dir):
            for text in split_statements(path.read_text()):
                if not ddl.is_empty(text):
                    statement = ddl.parse(text)
                    if statement.kind == "table" and _has_twin(statement):
                        tables[statement.name.name] = statement
        return cls(options, tables)

    def render_file(self, text: str) -> list[str]:
        """Every statement of a migration file, rendered (one source statement may give two)."""
        out: list[str] = []
        for text_ in split_statements(text):
            if not ddl.is_empty(text_):
                out += self.render(ddl.parse(text_))
        return out

    def render(self, statement: Statement) -> list[str]:
        """One statement for the cluster. Raises ClusterRenderError when it cannot be rendered."""
        kind = statement.kind
        if kind == "table":
            if statement.name.name in self.tables:
                return [self._local_table(statement), self._distributed_table(statement)]
            return [self._on_cluster(statement)]
        if kind == "materialized_view":
            if statement.target is None:
                raise ClusterRenderError(f"materialized view {statement.name.name}: write it with `TO <table>` "
                                         "(an inner table cannot be sharded)")
            edits = [(statement.target.span, self._local_ref(statement.target.name))]
            edits += self._local_refs(statement)
            return [self._on_cluster(statement, edits)]
        if kind in ("view", "function", "dictionary", "database"):
            return [self._on_cluster(statement)]
        if kind == "alter":
            return self._alter(statement)
        if kind == "drop":
            if statement.name.name in self.tables:
                return [self._on_cluster(statement), self._on_cluster(statement, local=True)]
            return [self._on_cluster(statement)]
        if kind in ("optimize", "truncate"):
            return [self._on_cluster(statement, local=statement.name.name in self.tables)]
        if kind == "insert":
            return [statement.text]  # through the Distributed tables, once (module docstring)
        raise ClusterRenderError(f"cannot render {kind} statement for a cluster: {statement.text[:80]}")

    # -- pieces ------------------------------------------------------------------------------
    def _on_cluster(self, statement: Statement, edits: list[tuple[Span, str]] | None = None,
                    *, local: bool = False) -> str:
        name = local_name(statement.name.name) if local else statement.name.name
        written = (quote_name(statement.name.database) + "." if statement.name.database else "") + quote_name(name)
        return ddl.apply_edits(statement.text, [(statement.name.span, written + self.options.on_cluster),
                                                *(edits or [])])

    def _local_ref(self, table: str) -> str:
        return quote_name(local_name(table)) if table in self.tables else quote_name(table)

    def _local_refs(self, statement: Statement) -> list[tuple[Span, str]]:
        return [(ref.span, quote_name(local_name(ref.name))) for ref in statement.table_refs()
                if ref.name in self.tables and ref.database in (None, self.options.database)]

    def _local_table(self, statement: Statement) -> str:
        edits: list[tuple[Span, str]] = []
        engine = statement.engine()
        assert engine is not None  # _has_twin checked it
        name, name_span, args = engine
        if name.endswith("MergeTree"):
            if not name.startswith("Replicated"):
                path = f"/clickhouse/tables/{{shard}}/{{database}}/{local_name(statement.name.name)}"
                inner = statement.text[args.start + 1 : args.end - 1].strip() if args else ""
                replicated = f"Replicated{name}('{path}', '{{replica}}'{', ' + inner if inner else ''})"
                edits.append((Span(name_span.start, args.end if args else name_span.end), replicated))
            edits.append(self._dedup_settings(statement))
        return self._on_cluster(statement, edits, local=True)

    def _dedup_settings(self, statement: Statement) -> tuple[Span, str]:
        """The SETTINGS clause with the replicated dedup window (replacing the non-replicated one)."""
        found = statement.settings()
        values, span = found if found is not None else ({}, Span(len(statement.text.rstrip()),
                                                                   len(statement.text.rstrip())))
        window = max([self.options.dedup_window] + [int(values.pop(k)) for k in
                      ("non_replicated_deduplication_window", "replicated_deduplication_window") if k in values])
        seconds = max(self.options.dedup_window_seconds, int(values.pop("replicated_deduplication_window_seconds", 0)))
        values["replicated_deduplication_window"] = str(window)
        values["replicated_deduplication_window_seconds"] = str(seconds)
        clause = "SETTINGS " + ", ".join(f"{k} = {v}" for k, v in values.items())
        return span, clause if found is not None else "\n" + clause

    def _distributed_table(self, statement: Statement) -> str:
        o = self.options
        table = statement.name.name
        local = local_name(table)
        return (f"CREATE TABLE IF NOT EXISTS {quote_name(table)}{o.on_cluster} AS {quote_name(local)}\n"
                f"ENGINE = Distributed({_literal(o.cluster)}, {_literal(o.database)}, {_literal(local)}, "
                f"{sharding_key(statement)})")

    def _alter(self, statement: Statement) -> list[str]:
        if statement.name.name not in self.tables:
            return [self._on_cluster(statement)]
        out = [self._on_cluster(statement, local=True)]
        # TRICKY: a Distributed table has columns but no indexes, TTL or storage settings: only
        # column changes apply to it too (it would refuse the others).
        if any(tok.text.upper() == "COLUMN" for tok in statement.tokens):
            out.append(self._on_cluster(statement))
        return out


def _has_twin(statement: Statement) -> bool:
    engine = statement.engine()
    return engine is not None and _ROW_ENGINES.fullmatch(engine[0]) is not None


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- whole migrations ----------------------------------------------------------------------------
def target(options: ClusterOptions, sql_dir: Traversable | None = None) -> MigrationTarget:
    """Where `clickstream.core.clickhouse.migrate` sends migrations for a cluster."""
    renderer = Renderer.for_migrations(options, sql_dir)
    return MigrationTarget(
        render=renderer.render_file,
        database_ddl=f"CREATE DATABASE IF NOT EXISTS {quote_name(options.database)}{options.on_cluster}",
        # one replicated table across the whole cluster (no {shard} in its path): every node sees
        # which migrations ran
        schema_migrations_ddl=(
            f"CREATE TABLE IF NOT EXISTS schema_migrations{options.on_cluster} ({SCHEMA_MIGRATIONS_COLUMNS}) "
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/all/{database}/schema_migrations', '{replica}') "
            "ORDER BY version"),
        events_table=local_name("events"),
        on_cluster=options.on_cluster,
        settings={"distributed_foreground_insert": 1},
    )


def open_configured(settings: Settings) -> Client:
    """`open_clickhouse` for a process: migrations rendered for CLICKSTREAM_CLICKHOUSE_CLUSTER when it
    is set (every process of a cluster deployment), for one server otherwise."""
    plan = target(ClusterOptions(settings.clickhouse_cluster)) if settings.clickhouse_cluster else None
    return open_clickhouse(settings.resolved_clickhouse_url, retention_days=settings.retention_days, target=plan)


def render_script(options: ClusterOptions, *, retention_days: int = 0, sql_dir: Traversable | None = None) -> str:
    """Every migration as one SQL script for `clickhouse-client --multiquery` (`migrate --print`).

    The script records each migration in `schema_migrations`, as `migrate --cluster` does, so a
    later `migrate --cluster` sees them applied.
    """
    plan = target(options, sql_dir)
    lines = [
        f"-- clickstream migrations for ClickHouse cluster {options.cluster!r}, database {options.database!r}.",
        "-- Every node defines the macros {shard} and {replica}; see deploy/README.md.",
        "SET distributed_foreground_insert = 1;",
        plan.database_ddl + ";",
        f"USE {quote_name(options.database)};",
        plan.schema_migrations_ddl + ";",
    ]
    for version, name, path in migrations(sql_dir):
        text = path.read_text()
        lines.append(f"\n-- {name}")
        lines += [statement + "\n;" for statement in plan.render(text)]
        checksum = hashlib.sha256(text.encode()).hexdigest()
        lines.append(f"INSERT INTO schema_migrations (version, name, checksum) VALUES ({version}, {_literal(name)}, "
                     f"{_literal(checksum)});")
    if retention_days > 0:
        lines.append(f"\n-- retention: {retention_days} days")
        lines.append(plan.retention_ddl(retention_days) + ";")
    return "\n".join(lines) + "\n"


__all__ = ["ClusterOptions", "ClusterRenderError", "Renderer", "UnsupportedStatement", "open_configured",
           "render_script", "target"]
