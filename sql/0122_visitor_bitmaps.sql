-- Visitors as Roaring bitmaps of visitor numbers, for the built-in dashboard (reports/dashboard/queries.py)
-- and its first render (BENCHMARKS.md "Dashboard first render").
--
-- The visitors of a range are exact: a union of the days' visitor sets, never a sum of daily counts.
-- Until now every day roll-up held its visitors as a uniqExact(String) state, and a union of those is
-- a hash-set merge of 128-bit hashes: most of a dashboard query's time at 10 M events. A Roaring bitmap
-- of small dense integers merges ~8x faster and is ~7x smaller (groupBitmap, ClickHouse's
-- "groupBitmap" aggregate and bitmap functions), but needs each visitor as a number.
--
-- visitor_numbers gives every (site, visitor) seen by the fold one number, dense per site from 1, and
-- never changes it: the fold (reports/fold.py NUMBER_SQL) numbers the visitors of a day it rebuilds that
-- have none, before building that day's roll-ups, with numbers above the site's largest. The fold is
-- the one writer (its lease), an insert that dies half-way leaves some visitors numbered and the next
-- run numbers the rest, so a visitor never has two numbers. A visitor in a folded day therefore has a
-- number; one first seen after the last fold has none yet.
CREATE TABLE IF NOT EXISTS visitor_numbers
(
    site_id       LowCardinality(String),
    anonymous_id  String,
    n             UInt32
)
ENGINE = MergeTree
ORDER BY (site_id, anonymous_id)
SETTINGS index_granularity = 1024
;

-- The roll-ups the dashboard's first render reads get each row's visitors as a bitmap too, beside the
-- uniqExact state (which the range views and BI users keep reading): definition version 2 of these
-- tables (reports/fold.py VERSIONS). A row folded by version 1 has an empty bitmap here; the fold builds
-- version 2 from history in a twin and switches it in whole (reports/versions.py), and the dashboard
-- reads the bitmaps only from a table whose comment says version 2 or later.
ALTER TABLE traffic_daily ADD COLUMN IF NOT EXISTS visitor_bitmap AggregateFunction(groupBitmap, UInt32);
ALTER TABLE channel_daily ADD COLUMN IF NOT EXISTS visitor_bitmap AggregateFunction(groupBitmap, UInt32);
ALTER TABLE page_daily ADD COLUMN IF NOT EXISTS visitor_bitmap AggregateFunction(groupBitmap, UInt32);
ALTER TABLE event_type_daily ADD COLUMN IF NOT EXISTS visitor_bitmap AggregateFunction(groupBitmap, UInt32);

-- The dashboard's views of those roll-ups (sql/0121_event_rollups.sql), with the bitmaps.
CREATE OR REPLACE VIEW dashboard_traffic_days AS
SELECT site_id, day, visitors, visitor_bitmap, sessions, pageviews, bounces, duration_ms
FROM traffic_daily
;

CREATE OR REPLACE VIEW dashboard_channel_days AS
SELECT site_id, day, channel, utm_source, utm_medium, utm_campaign, visitors, visitor_bitmap, sessions, revenue
FROM channel_daily
;

CREATE OR REPLACE VIEW dashboard_page_days AS
SELECT site_id, day, path, pageviews, visitors, visitor_bitmap
FROM page_daily
;

CREATE OR REPLACE VIEW dashboard_event_type_days AS
SELECT site_id, day, type, events, visitors, visitor_bitmap
FROM event_type_daily
;
