"""ClickHouse migrations, shipped as package data `clickstream.sql` (read through
clickstream.core.resources by clickstream.core.clickhouse.migrate)."""
