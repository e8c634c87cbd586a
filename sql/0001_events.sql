-- Raw telemetry: one row per accepted event, written only by the flusher.
--
-- PARTITION BY month: retention (TTL) and backfills drop or rewrite whole months; a month is
-- large enough to keep the part count low at high volume.
-- ORDER BY (site_id, toDate(ts), session_id, ts): dashboards filter by site and time range
-- first; within a day, rows of one session sit together, so session rebuilds and
-- attribution look-ups read contiguous granules.
-- non_replicated_deduplication_window: the flusher inserts each spool range with
-- insert_deduplication_token = segment id + offset range; ClickHouse drops a retried block
-- only if it is within the last N blocks of this table (the window). On a cluster use
-- ReplicatedMergeTree, where replicated_deduplication_window plays the same role.
-- The CHECK constraint turns an impossible timestamp into a data error (code 469) that the
-- flusher sends to dead_letters, instead of silently storing year 1970 or 2300.
CREATE TABLE IF NOT EXISTS events
(
    site_id        LowCardinality(String),
    ts             DateTime64(3, 'UTC'),
    event_id       UUID,
    type           LowCardinality(String),
    anonymous_id   String,
    session_id     String,
    url            String,
    host           LowCardinality(String),
    path           String,
    referrer       String,
    referrer_host  LowCardinality(String),
    title          String,
    channel        LowCardinality(String),
    utm_source     String,
    utm_medium     String,
    utm_campaign   String,
    utm_term       String,
    utm_content    String,
    variants       Map(String, String),
    props          Map(String, String),
    screen_w       UInt32,
    screen_h       UInt32,
    lang           LowCardinality(String),
    user_agent     String,
    browser        LowCardinality(String),
    browser_version LowCardinality(String),
    os             LowCardinality(String),
    os_version     LowCardinality(String),
    device_type    LowCardinality(String),
    is_bot         UInt8,
    ip_hash        String,
    received_at    DateTime64(3, 'UTC'),
    spool_segment  String,
    spool_offset   UInt64,
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3),
    CONSTRAINT ts_after_2000 CHECK ts >= toDateTime64('2000-01-01 00:00:00', 3, 'UTC'),
    CONSTRAINT ts_before_2200 CHECK ts < toDateTime64('2200-01-01 00:00:00', 3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (site_id, toDate(ts), session_id, ts)
SETTINGS non_replicated_deduplication_window = 10000
;
