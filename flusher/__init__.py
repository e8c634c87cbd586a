"""The flusher: spool segments into ClickHouse exactly once, with enrichment."""
