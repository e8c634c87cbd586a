-- Order of events (docs/architecture.md "Order of events", sql/README.md "Order of events"): by `ts`,
-- then the client's `seq`, then arrival order, the spool position (`spool_segment`, `spool_offset`).
-- Every "earliest / latest event" of the schema (entry and exit page, first touch, the fold's
-- session facts of 0101, the stitcher's attribution) uses the key (ts, seq, spool_segment, spool_offset).
--
-- seq: the client's per-session event counter (beacon.js; schemas/event.schema.json `seq`), 0 when the
-- event has none (older beacons, imports without it). Two events of one session with equal ts and
-- seq (0 and 0: no counter) fall back to arrival order; a counter that orders them wins over
-- arrival (a retried earlier event that arrives after a later one keeps its place).
--
-- `events_ingest` gets the column (a field absent from a row takes the default, 0) and its
-- materialized view is recreated to copy it: the same SELECT as 0007 plus `seq`. Dropped and created
-- again in one migration, applied at start before the flusher inserts.
ALTER TABLE events ADD COLUMN IF NOT EXISTS seq UInt32 DEFAULT 0 AFTER spool_offset
;
ALTER TABLE events_ingest ADD COLUMN IF NOT EXISTS seq UInt32 DEFAULT 0
;
DROP VIEW IF EXISTS events_ingest_mv
;
CREATE MATERIALIZED VIEW IF NOT EXISTS events_ingest_mv TO events AS
SELECT
    site_id,
    fromUnixTimestamp64Milli(ts, 'UTC') AS ts,
    event_id,
    type,
    anonymous_id,
    session_id,
    url,
    lower(domain(url)) AS host,
    if(path(url) = '', '/', path(url)) AS path,
    referrer,
    clickstream_referrer_host(referrer, url) AS referrer_host,
    title,
    clickstream_channel(utm_source, utm_medium, referrer_host) AS channel,
    clickstream_utm(utm, url, utm.source, 'utm_source') AS utm_source,
    clickstream_utm(utm, url, utm.medium, 'utm_medium') AS utm_medium,
    clickstream_utm(utm, url, utm.campaign, 'utm_campaign') AS utm_campaign,
    clickstream_utm(utm, url, utm.term, 'utm_term') AS utm_term,
    clickstream_utm(utm, url, utm.content, 'utm_content') AS utm_content,
    variants,
    props,
    screen.w AS screen_w,
    screen.h AS screen_h,
    lang,
    user_agent,
    browser,
    browser_version,
    os,
    os_version,
    device_type,
    is_bot,
    ip_hash,
    fromUnixTimestamp64Milli(received_at, 'UTC') AS received_at,
    spool_segment,
    spool_offset,
    seq
FROM events_ingest
;
