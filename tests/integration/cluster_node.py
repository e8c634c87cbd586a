"""A one-node stand-in for a ClickHouse cluster node, run in its own process by test_cluster.py.

chDB with a config file (`chdb_options={"config-file": ...}`) gets a `remote_servers` cluster, so
the rendered `Distributed` tables, the materialized views over the `_local` tables and the views
over the `Distributed` ones are really created: ClickHouse resolves every column, type and function
of them. What an embedded engine cannot do: run `ON CLUSTER` DDL (no DDL worker), reach other
shards (no TCP server), or keep Replicated tables writable (its in-process test Keeper leaves them
read-only or hangs, chDB 26.9). So each rendered statement runs here as a node's DDL worker would
run it, with `ON CLUSTER` removed, and with each `Replicated*MergeTree(path, replica, args)` as its
`*MergeTree(args)` and the replicated dedup window as the non-replicated one: same columns, keys,
views and windows, the deduplication by token kept by the same rule (ClickHouse docs,
"Deduplicating inserts on retries").

Its own process: chDB keeps one engine per process, and this one has a different configuration
from the other tests'. Prints one JSON object with what it observed.

Usage: python -m tests.integration.cluster_node DIR
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

import clickhouse_connect

from clickstream.core import cluster
from clickstream.core.clickhouse import DATABASE, INSERT_SETTINGS, check_guarantees, migrate

CONFIG = """<clickhouse>
  <remote_servers>
    <clickstream>
      <shard><internal_replication>true</internal_replication>
        <replica><host>localhost</host><port>9000</port></replica></shard>
      <shard><internal_replication>true</internal_replication>
        <replica><host>localhost</host><port>9000</port></replica></shard>
    </clickstream>
  </remote_servers>
</clickhouse>
"""

OPTIONS = cluster.ClusterOptions("clickstream")


def as_node_runs_it(sql: str) -> str:
    """A rendered statement as the stand-in runs it (module docstring)."""
    sql = re.sub(r" ON CLUSTER \S+", "", sql)
    sql = re.sub(r"Replicated(\w*MergeTree)\('[^']*', '[^']*'(, )?", r"\1(", sql)
    return re.sub(r"replicated_deduplication_window = (\d+), replicated_deduplication_window_seconds = \d+",
                  r"non_replicated_deduplication_window = \1", sql)


def local_target() -> Any:
    """The cluster target, as one node's DDL worker would execute it."""
    target = cluster.target(OPTIONS)
    return dataclasses.replace(
        target,
        render=lambda text: [as_node_runs_it(s) for s in target.render(text)],
        database_ddl=as_node_runs_it(target.database_ddl),
        schema_migrations_ddl=as_node_runs_it(target.schema_migrations_ddl),
        on_cluster="",
    )


def insert_batch(client: Any, token: str, visitors: int) -> None:
    """One flusher batch into the shard's ingest table: `visitors` visitors, 3 page views each."""
    client.command(
        "INSERT INTO events_ingest_local (type, site_id, anonymous_id, session_id, ts, url, event_id, user_agent, "
        "received_at, variants) "
        f"SETTINGS insert_deduplication_token = '{token}', "
        + ", ".join(f"{k} = {v}" for k, v in INSERT_SETTINGS.items())
        + " SELECT 'page_view', 'example.com', 'a' || toString(intDiv(number, 3)), 's' || toString(intDiv(number, 3)), "
        "toUnixTimestamp64Milli(now64(3)) - number * 1000, 'https://example.com/p' || toString(number % 3), "
        "generateUUIDv4(), "
        "'Mozilla/5.0', toUnixTimestamp64Milli(now64(3)), map('hero', if(number % 2 = 0, 'A', 'B')) "
        f"FROM numbers({visitors * 3})")


def main(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "config.xml"
    config.write_text(CONFIG)
    bootstrap = clickhouse_connect.get_client(dsn=f"chdb://{directory / 'ch'}",
                                              chdb_options={"config-file": str(config)})
    bootstrap.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client = clickhouse_connect.get_client(dsn=f"chdb://{directory / 'ch'}", database=DATABASE,
                                           chdb_options={"config-file": str(config)})
    applied = migrate(client, retention_days=30, target=local_target())
    tables = dict(client.query("SELECT name, engine FROM system.tables WHERE database = currentDatabase()").result_rows)
    problems = check_guarantees(client)

    def counts() -> dict[str, int]:
        return {t: int(client.query(f"SELECT count() FROM {t}").result_rows[0][0])
                for t in ("events_local", "sessions_local", "variant_exposures_local")}

    insert_batch(client, "seg-1:0-100", visitors=50)
    first = counts()
    insert_batch(client, "seg-1:0-100", visitors=50)  # the retry of the same batch
    retried = counts()
    insert_batch(client, "seg-1:100-200", visitors=50)  # the next batch: same shape, its own token
    after_next = counts()
    ttl = str(client.query("SELECT create_table_query FROM system.tables WHERE database = currentDatabase() "
                           "AND name = 'events_local'").result_rows[0][0])
    print(json.dumps({"applied": applied, "tables": tables, "problems": problems, "first": first,
                      "retried": retried, "after_next": after_next,
                      "events_ttl": " TTL " in ttl}))
    client.close()
    bootstrap.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
