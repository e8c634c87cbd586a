"""`clickstream migrate --cluster`: every migration in sql/, whatever files exist, rendered for a
cluster: ClickHouse parses each statement, every table that receives rows is sharded by a key that
a retry repeats (the visitor, where the table has one), and every table an insert reaches has a
replicated dedup window. The rendered DDL also runs on a one-node stand-in (cluster_node.py) and
keeps exactly-once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from clickstream.cli import main
from clickstream.core import cluster, ddl
from clickstream.core.clickhouse import DEDUP_TABLES, check_guarantees, connect, migrate, migrations, split_statements

OPTIONS = cluster.ClusterOptions("clickstream", dedup_window=12_345, dedup_window_seconds=86_400)


def rendered() -> list[tuple[str, ddl.Statement, str]]:
    """(migration, source statement, rendered SQL) for every statement of every migration."""
    renderer = cluster.Renderer.for_migrations(OPTIONS)
    out = []
    for _, name, path in migrations():
        for text in split_statements(path.read_text()):
            if not ddl.is_empty(text):
                source = ddl.parse(text)
                out += [(name, source, sql) for sql in renderer.render(source)]
    return out


def distributed_tables() -> dict[str, list[str]]:
    """Distributed table name -> its engine arguments, from the rendered DDL."""
    found = {}
    for _, _, sql in rendered():
        statement = ddl.parse(sql)
        engine = statement.engine()
        if statement.kind == "table" and engine and engine[0] == "Distributed":
            found[statement.name.name] = ddl.call_args(sql[engine[1].start:])
    return found


def test_clickhouse_parses_every_rendered_statement(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path}")
    try:
        engines = {str(r[0]) for r in client.query("SELECT name FROM system.table_engines").result_rows}
        table_settings = {str(r[0]) for r in client.query("SELECT name FROM system.merge_tree_settings").result_rows}
        for name, source, sql in rendered():
            # a parameter, not the text: `{shard}` in the Keeper path would read as a query parameter
            formatted = client.query("SELECT formatQuery({q:String})", parameters={"q": sql}).result_rows[0][0]
            if source.kind != "insert":
                assert " ON CLUSTER clickstream" in formatted, (name, formatted[:200])
            statement = ddl.parse(sql)
            # formatQuery only parses: engine and setting names are checked against the server's lists
            if statement.kind == "table" and (engine := statement.engine()):
                assert engine[0] in engines, (name, engine[0])
                for setting in (statement.settings() or ({}, None))[0]:
                    assert setting in table_settings, (name, setting)
    finally:
        client.close()


def test_tables_with_rows_are_sharded_by_a_key_a_retry_repeats() -> None:
    shards = distributed_tables()
    receiving = {s.name.name for _, s, _ in rendered() if s.kind == "table" and cluster._has_twin(s)}
    assert receiving >= {*DEDUP_TABLES, "events_ingest"}
    assert set(shards) == receiving
    for table, args in shards.items():
        assert args[:3] == ["'clickstream'", "'clickstream'", f"'{table}_local'"], table
        assert len(args) == 4 and "rand" not in args[3], (table, args)
    # a visitor's events, sessions, exposures, leads and conversions on one shard
    for table in ("events_ingest", "events", "sessions", "variant_exposures", "lead_events", "conversions"):
        assert shards[table][3] == "cityHash64(site_id, anonymous_id)", table
    assert shards["dead_letters"][3] == "cityHash64(spool_segment, spool_offset)"


def test_every_table_an_insert_reaches_has_the_replicated_dedup_window() -> None:
    statements = [ddl.parse(sql) for _, _, sql in rendered()]
    windows = {}
    for s in statements:
        engine = s.engine() if s.kind == "table" else None
        if engine and engine[0].endswith("MergeTree"):
            assert engine[0].startswith("Replicated"), (s.name.name, engine[0])
            settings = (s.settings() or ({}, None))[0]
            assert "non_replicated_deduplication_window" not in settings
            windows[s.name.name] = (int(settings["replicated_deduplication_window"]),
                                    int(settings["replicated_deduplication_window_seconds"]))
    targets = {s.target.name for s in statements if s.kind == "materialized_view" and s.target}
    reached = targets | {f"{t}_local" for t in DEDUP_TABLES}
    assert {"events_local", "sessions_local", "variant_exposures_local", "conversions_local"} <= targets
    for table in reached:
        assert windows.get(table) == (12_345, 86_400), table
    # materialized views read and write the shard's own tables, never a Distributed one
    for s in statements:
        if s.kind == "materialized_view":
            assert all(ref.name.endswith("_local") for ref in s.table_refs()), s.name.name


def test_rendered_ddl_runs_on_a_node_and_keeps_exactly_once(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "tests.integration.cluster_node", str(tmp_path)],
                         capture_output=True, text=True, timeout=240, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["applied"] == [name for _, name, _ in migrations()]
    assert seen["problems"] == []  # check_guarantees follows each Distributed table to its local table
    assert seen["tables"]["events"] == "Distributed" and seen["tables"]["events_local"] == "MergeTree"
    assert all(seen["tables"][v] == "View" for v in ("v_sessions", "v_variant_lift", "v_lead_sessions"))
    assert seen["first"] == {"events_local": 150, "sessions_local": 50, "variant_exposures_local": 100}
    assert seen["retried"] == seen["first"]  # the same token again: dropped in events and in every MV target
    assert seen["after_next"] == {"events_local": 300, "sessions_local": 100, "variant_exposures_local": 200}
    assert seen["events_ttl"]


def test_check_guarantees_finds_a_view_target_without_window(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path}")
    try:
        migrate(client)
        assert check_guarantees(client) == []
        client.command("CREATE TABLE daily (site_id String, day Date, n UInt64) ENGINE = SummingMergeTree "
                       "ORDER BY (site_id, day)")
        client.command("CREATE MATERIALIZED VIEW daily_mv TO daily AS SELECT site_id, toDate(ts) AS day, "
                       "count() AS n FROM events GROUP BY site_id, day")
        assert check_guarantees(client) == [
            "table daily has no deduplication window: retried inserts would count twice"]
    finally:
        client.close()


def test_renderer_refuses_what_it_cannot_shard() -> None:
    renderer = cluster.Renderer.for_migrations(OPTIONS)
    with pytest.raises(cluster.ClusterRenderError, match="TO <table>"):
        renderer.render(ddl.parse("CREATE MATERIALIZED VIEW m ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a"))
    lonely = ddl.parse("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY tuple()")
    with pytest.raises(cluster.ClusterRenderError, match="SHARDING_KEYS"):
        cluster.Renderer(OPTIONS, {"t": lonely}).render(lonely)
    with pytest.raises(ddl.UnsupportedStatement):
        ddl.parse("SYSTEM FLUSH LOGS")


def test_renderer_rewrites_alters_and_backfills_generically() -> None:
    renderer = cluster.Renderer.for_migrations(OPTIONS)
    add_column = renderer.render(ddl.parse("ALTER TABLE events ADD COLUMN IF NOT EXISTS x String"))
    assert add_column == ["ALTER TABLE events_local ON CLUSTER clickstream ADD COLUMN IF NOT EXISTS x String",
                          "ALTER TABLE events ON CLUSTER clickstream ADD COLUMN IF NOT EXISTS x String"]
    ttl = renderer.render(ddl.parse("ALTER TABLE sessions MODIFY TTL toDateTime(ended_at) + INTERVAL 1 YEAR"))
    assert ttl == [
        "ALTER TABLE sessions_local ON CLUSTER clickstream MODIFY TTL toDateTime(ended_at) + INTERVAL 1 YEAR"]
    backfill = "INSERT INTO sessions SELECT * FROM events WHERE ts >= {from:Date}"
    assert renderer.render(ddl.parse(backfill)) == [backfill]
    view = renderer.render(ddl.parse("CREATE VIEW v_x AS SELECT count() FROM events WHERE site_id = {site:String}"))
    assert view == [
        "CREATE VIEW v_x ON CLUSTER clickstream AS SELECT count() FROM events WHERE site_id = {site:String}"]
    mv = renderer.render(ddl.parse("CREATE MATERIALIZED VIEW IF NOT EXISTS m TO sessions AS SELECT 'FROM events' AS t "
                                   "FROM events ARRAY JOIN [1] AS events LEFT JOIN lead_events USING (site_id)"))
    assert mv == ["CREATE MATERIALIZED VIEW IF NOT EXISTS m ON CLUSTER clickstream TO sessions_local AS SELECT "
                  "'FROM events' AS t FROM events_local ARRAY JOIN [1] AS events LEFT JOIN lead_events_local "
                  "USING (site_id)"]


def test_migrate_cluster_print_writes_the_whole_script() -> None:
    result = CliRunner().invoke(main, ["migrate", "--cluster", "prod", "--print", "--dedup-window", "20000"])
    assert result.exit_code == 0, result.output
    script = result.output
    assert "CREATE DATABASE IF NOT EXISTS clickstream ON CLUSTER prod;" in script
    replicated = re.findall(r"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/{shard}/", script)
    assert len(replicated) >= len(DEDUP_TABLES)  # every stored table of sql/ is replicated, with the window
    assert script.count("replicated_deduplication_window = 20000") == len(replicated)
    recorded = re.findall(r"INSERT INTO schema_migrations \(version, name, checksum\) VALUES \(\d+, '(\w+)'", script)
    assert recorded == [name for _, name, _ in migrations()]
    refused = CliRunner().invoke(main, ["migrate", "--cluster", "prod"], env={"CLICKSTREAM_CLICKHOUSE_URL": ""})
    assert refused.exit_code == 2 and "http(s)://" in refused.output
