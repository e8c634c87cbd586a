-- Roll-ups that a dashboard reads for a site and a date range, rebuilt whole days at a time by the
-- fold (reports/fold.py) from `events`, with the same SQL a recount uses (reports/fold.py FACTS_SQL,
-- ROLLUP_SQL): a roll-up equals a recount of `events` by construction, whatever the order, lateness,
-- retries or crashes of the inserts (sql/README.md "Roll-ups and the fold").
--
-- PARTITION BY day (the UTC day a session started): the fold builds a day in a staging table (a copy
-- of the table's structure, reports/fold.py) and swaps it in with `ALTER TABLE … REPLACE PARTITION`,
-- an atomic exchange of the day's parts: a reader sees the old day or the new one, never half of it.
-- ORDER BY (site_id, day, …): a dashboard filters on site and day range first, so a 7-day question
-- reads 7 days of one site (tests/integration/test_rollups.py checks the rows read).
-- One row per key and day, final: plain sums, and uniqExactState(anonymous_id) for visitors, which
-- merges exactly across days (uniqExactMerge over a range = distinct visitors of the range, never a
-- sum of daily counts).
-- No deduplication window here on purpose: only the fold writes these tables (never an insert
-- retried by the flusher, never a materialized view), and a window would make the staging table drop
-- a rebuilt day identical to one built before (the dedup log outlives TRUNCATE) and swap in nothing.
-- The bots (is_bot = 1) are in session_facts, flagged, and left out of every roll-up.
-- Backfill: the first fold run (no row in fold_runs yet) treats every day of `events` as dirty and
-- builds the roll-ups of all of history (reports/fold.py); it runs at the start of serve and the
-- flusher, so an upgraded installation has its views back after one run.

-- One final row per session, on the UTC day of its first event (started_at). Its events are those of
-- that day and the next (a session of the beacon ends after 30 min without an event, so none is cut
-- in practice; a longer one is cut at the end of the next day, the same way in a recount).
-- Order of events: (ts, seq, spool_segment, spool_offset), 0100_event_order.sql.
CREATE TABLE IF NOT EXISTS session_facts
(
    site_id          LowCardinality(String),
    session_id       String,
    anonymous_id     String,
    started_at       DateTime64(3, 'UTC'),
    ended_at         DateTime64(3, 'UTC'),
    pageviews        UInt64,
    events           UInt64,
    entry_path       String,
    exit_path        String,
    utm_source       String,
    utm_medium       String,
    utm_campaign     String,
    utm_term         String,
    utm_content      String,
    referrer_host    String,
    channel          LowCardinality(String),
    variants         Array(Tuple(String, String)),
    is_bot           UInt8,
    engaged_ms       UInt64,
    max_scroll_depth UInt8,
    passive_events   UInt64,
    revenue          Map(String, Decimal(38, 6)),
    is_engaged       UInt8,
    is_bounce        UInt8
)
ENGINE = MergeTree
PARTITION BY toDate(started_at)
ORDER BY (site_id, toDate(started_at), session_id)
;

-- Traffic per site and day: visitors (uniqExact state), sessions, page views, bounces, the sums behind
-- average duration and engaged time (ms, integers: exact), engaged sessions.
CREATE TABLE IF NOT EXISTS traffic_daily
(
    site_id          LowCardinality(String),
    day              Date,
    visitors         AggregateFunction(uniqExact, String),
    sessions         UInt64,
    pageviews        UInt64,
    bounces          UInt64,
    duration_ms      UInt64,
    engaged_sessions UInt64,
    engaged_ms       UInt64
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (site_id, day)
;

-- Landing pages per site and day (sessions with at least one page view, by entry path).
CREATE TABLE IF NOT EXISTS landing_daily
(
    site_id          LowCardinality(String),
    day              Date,
    landing_path     String,
    visitors         AggregateFunction(uniqExact, String),
    sessions         UInt64,
    engaged_sessions UInt64,
    revenue          Map(String, Decimal(38, 6))
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (site_id, day, landing_path)
;

-- Channels and campaigns (the session's first touch) per site and day.
CREATE TABLE IF NOT EXISTS channel_daily
(
    site_id          LowCardinality(String),
    day              Date,
    channel          LowCardinality(String),
    utm_source       String,
    utm_medium       String,
    utm_campaign     String,
    visitors         AggregateFunction(uniqExact, String),
    sessions         UInt64,
    engaged_sessions UInt64,
    revenue          Map(String, Decimal(38, 6))
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (site_id, day, channel, utm_source, utm_medium, utm_campaign)
;

-- Dirty days: the days the fold must rebuild. Every block inserted into `events` marks the UTC day of
-- each of its events and the day before (a session belongs to the day it started, and one that
-- started before midnight gets events after it). The fold reads the marks of the parts it sees,
-- rebuilds those days, then drops exactly those parts (`DROP PART`): a mark that arrives while it
-- works is in another part and stays for the next run, and a part merged meanwhile cannot be dropped
-- by its old name, so its days are rebuilt again next time. A rebuild is idempotent: a day marked
-- twice costs time, never a wrong number (reports/fold.py). marked_at is part of the row so that two
-- inserts marking the same days are two blocks, not one block deduplicated by its hash.
-- The deduplication window is needed as on every materialized-view target (clickstream.core.clickhouse
-- check_guarantees): a retried insert dropped by `events` is dropped here too.
CREATE TABLE IF NOT EXISTS fold_dirty_days
(
    day        Date,
    marked_at  DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (marked_at, day)
SETTINGS non_replicated_deduplication_window = 10000
;

CREATE MATERIALIZED VIEW IF NOT EXISTS fold_dirty_days_mv TO fold_dirty_days AS
SELECT DISTINCT arrayJoin([toDate(ts), toDate(ts) - 1]) AS day, now64(6, 'UTC') AS marked_at
FROM events
;

-- One row per fold run: `watermark` is the time the run started (every insert committed before it is
-- in the roll-ups once the run finished), the days it rebuilt and who ran it (a freshness log: the
-- load audit waits for a run that started after its events were in).
CREATE TABLE IF NOT EXISTS fold_runs
(
    watermark    DateTime64(6, 'UTC'),
    finished_at  DateTime64(6, 'UTC'),
    days         Array(Date),
    holder       String
)
ENGINE = MergeTree
ORDER BY watermark
TTL toDateTime(watermark) + INTERVAL 30 DAY
;

-- The fold's lease: one fold at a time across processes on one ClickHouse server (reports/fold.py
-- FoldLease). A claim is a row; the earliest unexpired, unreleased claim holds the lease.
CREATE TABLE IF NOT EXISTS fold_lease
(
    holder      String,
    claimed_at  DateTime64(6, 'UTC'),
    expires_at  DateTime64(6, 'UTC'),
    released    UInt8
)
ENGINE = MergeTree
ORDER BY (claimed_at, holder)
TTL toDateTime(claimed_at) + INTERVAL 1 DAY
;
