-- The leads and the visitor bitmaps of the landing-page and channel roll-ups, so the dashboard views
-- answer from one roll-up each, with no join (sql/bitmap_views.sql, reports/views.py).
--
-- landing_daily, definition version 2 (reports/fold.py VERSIONS):
--   visitor_bitmap: the visitors as a Roaring bitmap of visitor numbers, as traffic_daily and
--     channel_daily have had since 0122;
--   leads: uniqExact state of the lead_id of the leads that occurred on the day (UTC, occurred_at) with
--     this frozen landing_path. A landing path with leads and no session that day has a row with
--     sessions = 0 (as the FULL OUTER JOIN of v_landing_pages gave it).
-- channel_daily, definition version 3: leads by their frozen last touch (channel, utm_source,
--   utm_medium, utm_campaign), as v_channels counts them; a row with sessions = 0 holds leads only.
-- A row folded by an earlier version has empty bitmaps and lead states here; the fold builds the new
-- version from history in a twin and switches it in whole (reports/versions.py), and the views read
-- these columns only from a roll-up that holds it.
ALTER TABLE landing_daily ADD COLUMN IF NOT EXISTS visitor_bitmap AggregateFunction(groupBitmap, UInt32);
ALTER TABLE landing_daily ADD COLUMN IF NOT EXISTS leads AggregateFunction(uniqExact, String);
ALTER TABLE channel_daily ADD COLUMN IF NOT EXISTS leads AggregateFunction(uniqExact, String);

-- A lead marks the day it occurred on for its site: the fold rebuilds that day's roll-ups (their leads).
-- fold_dirty_days has the deduplication window of a materialized-view target (0101), so a retried
-- insert of the same leads marks nothing twice.
CREATE MATERIALIZED VIEW IF NOT EXISTS fold_dirty_lead_days_mv TO fold_dirty_days AS
SELECT DISTINCT site_id, toDate(occurred_at) AS day, now64(6, 'UTC') AS marked_at
FROM lead_events
;

-- The built-in dashboard counts sessions and visitors per channel: leads-only rows are not channels
-- with traffic (same columns as 0122 and 0111).
CREATE OR REPLACE VIEW dashboard_channel_days AS
SELECT site_id, day, channel, utm_source, utm_medium, utm_campaign, visitors, visitor_bitmap, sessions, revenue
FROM channel_daily
WHERE sessions > 0
;

CREATE OR REPLACE VIEW v_channel_day_states AS
SELECT site_id, day, channel, utm_source, utm_medium, utm_campaign, hex(CAST(visitors, 'String')) AS visitors_state, sessions, engaged_sessions, revenue
FROM channel_daily
WHERE sessions > 0
;
