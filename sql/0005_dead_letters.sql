-- Rows ClickHouse refused with a data error (bad value, violated constraint), isolated by the
-- flusher's batch split, kept with the error so nothing is lost without trace. `payload` is the
-- spool record as the collector wrote it; (spool_segment, spool_offset) says where it was.
CREATE TABLE IF NOT EXISTS dead_letters
(
    failed_at      DateTime64(3, 'UTC'),
    error_code     Int32,
    error          String,
    spool_segment  String,
    spool_offset   UInt64,
    payload        String
)
ENGINE = MergeTree
ORDER BY (failed_at, spool_segment, spool_offset)
SETTINGS non_replicated_deduplication_window = 10000
;
