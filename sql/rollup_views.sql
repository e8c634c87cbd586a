-- The dashboard views of sql/0102_range_views.sql answered from one roll-up each: not a migration (no
-- number); reports/views.py creates them once the roll-ups hold the columns they read.
--
-- Same names, columns and types as 0102's; two differences in how they count:
--   visitors: groupBitmapMerge(visitor_bitmap), the union of the rows' Roaring bitmaps of visitor
--     numbers, instead of uniqExactMerge(visitors), the union of their hash sets of 128-bit hashes:
--     the same exact number (every visitor of a folded day has one number, reports/fold.py
--     NUMBER_SQL), at a fraction of the cost (BENCHMARKS.md "Dashboard views");
--   leads: uniqExactMerge(leads) of the roll-up rows (the leads of each day, by occurred_at, under
--     their frozen landing_path or last touch, sql/0124_rollup_leads.sql) instead of a FULL OUTER JOIN
--     with lead_events. Rows with sessions = 0 hold leads only, as the join gave them.
-- A roll-up holds these columns from definition version 2 (traffic_daily, landing_daily) or 3
-- (channel_daily) on (reports/fold.py VERSIONS). While one is still built from history on an upgraded
-- installation (reports/versions.py), its views stay in 0102's form; reports/views.py `sync`, after
-- every fold run, creates each view in the form its roll-up allows.
-- Each statement reads one roll-up (the `FROM` name ending in `_daily`), which reports/views.py checks.

-- Traffic per UTC day of session start (human sessions). A WHERE on site_id and day reads those days.
CREATE OR REPLACE VIEW v_daily_traffic AS
SELECT
    site_id,
    day,
    groupBitmapMerge(visitor_bitmap) AS visitors,
    sum(sessions) AS sessions,
    sum(pageviews) AS pageviews,
    sum(bounces) / sessions AS bounce_rate,
    sum(duration_ms) / 1000 / sessions AS avg_duration_s,
    sum(engaged_sessions) AS engaged_sessions,
    engaged_sessions / sessions AS engagement_rate,
    sum(engaged_ms) / 1000 / sessions AS avg_engaged_s
FROM traffic_daily
GROUP BY site_id, day
;

-- Traffic of a site over a range of days: one row, visitors distinct over the whole range.
CREATE OR REPLACE VIEW v_traffic_range AS
SELECT
    site_id,
    min(day) AS first_day,
    max(day) AS last_day,
    groupBitmapMerge(visitor_bitmap) AS visitors,
    sum(sessions) AS sessions,
    sum(pageviews) AS pageviews,
    sum(bounces) / sessions AS bounce_rate,
    sum(duration_ms) / 1000 / sessions AS avg_duration_s,
    sum(engaged_sessions) AS engaged_sessions,
    engaged_sessions / sessions AS engagement_rate,
    sum(engaged_ms) / 1000 / sessions AS avg_engaged_s
FROM traffic_daily
WHERE site_id = {site:String} AND day >= {from:Date} AND day <= {to:Date}
GROUP BY site_id
;

-- Landing pages over all of history; leads by their frozen landing_path.
CREATE OR REPLACE VIEW v_landing_pages AS
SELECT
    site_id,
    landing_path,
    sum(sessions) AS sessions,
    groupBitmapMerge(visitor_bitmap) AS visitors,
    uniqExactMerge(leads) AS leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate,
    sum(engaged_sessions) AS engaged_sessions,
    if(sessions = 0, NULL, engaged_sessions / sessions) AS engagement_rate,
    sumMap(revenue) AS revenue
FROM landing_daily
GROUP BY site_id, landing_path
;

-- Landing pages of a site over a range of days.
CREATE OR REPLACE VIEW v_landing_pages_range AS
SELECT
    site_id,
    landing_path,
    sum(sessions) AS sessions,
    groupBitmapMerge(visitor_bitmap) AS visitors,
    uniqExactMerge(leads) AS leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate,
    sum(engaged_sessions) AS engaged_sessions,
    if(sessions = 0, NULL, engaged_sessions / sessions) AS engagement_rate,
    sumMap(revenue) AS revenue
FROM landing_daily
WHERE site_id = {site:String} AND day >= {from:Date} AND day <= {to:Date}
GROUP BY site_id, landing_path
;

-- Channels and campaigns (first touch) over all of history; leads by their frozen last touch.
CREATE OR REPLACE VIEW v_channels AS
SELECT
    site_id,
    channel,
    utm_source,
    utm_medium,
    utm_campaign,
    sum(sessions) AS sessions,
    groupBitmapMerge(visitor_bitmap) AS visitors,
    uniqExactMerge(leads) AS leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate,
    sum(engaged_sessions) AS engaged_sessions,
    if(sessions = 0, NULL, engaged_sessions / sessions) AS engagement_rate,
    sumMap(revenue) AS revenue
FROM channel_daily
GROUP BY site_id, channel, utm_source, utm_medium, utm_campaign
;

-- Channels and campaigns of a site over a range of days.
CREATE OR REPLACE VIEW v_channels_range AS
SELECT
    site_id,
    channel,
    utm_source,
    utm_medium,
    utm_campaign,
    sum(sessions) AS sessions,
    groupBitmapMerge(visitor_bitmap) AS visitors,
    uniqExactMerge(leads) AS leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate,
    sum(engaged_sessions) AS engaged_sessions,
    if(sessions = 0, NULL, engaged_sessions / sessions) AS engagement_rate,
    sumMap(revenue) AS revenue
FROM channel_daily
WHERE site_id = {site:String} AND day >= {from:Date} AND day <= {to:Date}
GROUP BY site_id, channel, utm_source, utm_medium, utm_campaign
;
