-- The dashboard views over the roll-ups of 0101 (built by the fold, reports/fold.py): same names and
-- columns as before (docs/architecture.md), now cheap for a site and a date range.
-- Freshness: the views read roll-ups only, so they show what the last fold built (every
-- CLICKSTREAM_FOLD_INTERVAL_S, and at the stop of serve / the flusher / `import --flush`).
--
-- Two forms (sql/README.md "Dashboard queries" has the query a dashboard writes for each):
--   plain views, filtered with WHERE: v_sessions (filter on started_at: session_facts is ordered by
--     (site_id, toDate(started_at), session_id)), v_daily_traffic (one row per site and day), and
--     v_landing_pages / v_channels over all of history (distinct visitors exact over all days);
--   parameterized views for a range, v_traffic_range, v_landing_pages_range, v_channels_range
--     (site, from, to: UTC dates, both included): the roll-up rows of those days only, visitors merged
--     exactly over the range (uniqExactMerge of the daily states). The arguments may be expressions,
--     so Grafana's macros work: v_channels_range(site = 'x', from = toDate($__fromTime), to = toDate($__toTime)).
-- Leads count by their occurred_at in the range (lead_events is ordered by (site_id, occurred_at)).

-- One row per session (bots included, flagged), from session_facts; duration_s in seconds (ms precision).
CREATE OR REPLACE VIEW v_sessions AS
SELECT
    site_id,
    session_id,
    anonymous_id,
    started_at,
    ended_at,
    (toUnixTimestamp64Milli(ended_at) - toUnixTimestamp64Milli(started_at)) / 1000 AS duration_s,
    pageviews,
    events,
    entry_path,
    exit_path,
    utm_source,
    utm_medium,
    utm_campaign,
    utm_term,
    utm_content,
    referrer_host,
    channel,
    variants,
    is_bot,
    engaged_ms,
    max_scroll_depth,
    revenue,
    is_engaged,
    is_bounce
FROM session_facts
;

-- Recreated unchanged (as in 0060): a view's column types are fixed when it is created.
CREATE OR REPLACE VIEW v_lead_sessions AS
SELECT
    l.lead_id AS lead_id,
    l.occurred_at AS lead_occurred_at,
    s.site_id AS site_id,
    s.anonymous_id AS anonymous_id,
    s.session_id AS session_id,
    s.started_at AS started_at,
    s.ended_at AS ended_at,
    s.pageviews AS pageviews,
    s.entry_path AS entry_path,
    s.channel AS channel,
    s.utm_source AS utm_source,
    s.utm_medium AS utm_medium,
    s.utm_campaign AS utm_campaign,
    toUInt8(s.started_at <= l.occurred_at) AS before_lead
FROM lead_events AS l
INNER JOIN v_sessions AS s ON s.site_id = l.site_id AND s.anonymous_id = l.anonymous_id
;

-- Traffic per UTC day of session start (human sessions). A WHERE on site_id and day reads those days.
CREATE OR REPLACE VIEW v_daily_traffic AS
SELECT
    site_id,
    day,
    uniqExactMerge(visitors) AS visitors,
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
    uniqExactMerge(visitors) AS visitors,
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
    sessions,
    visitors,
    leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate,
    engaged_sessions,
    if(sessions = 0, NULL, engaged_sessions / sessions) AS engagement_rate,
    revenue
FROM
(
    SELECT site_id, landing_path, sum(sessions) AS sessions, uniqExactMerge(visitors) AS visitors,
           sum(engaged_sessions) AS engaged_sessions, sumMap(revenue) AS revenue
    FROM landing_daily
    GROUP BY site_id, landing_path
) AS s
FULL OUTER JOIN
(
    SELECT site_id, landing_path, uniqExact(lead_id) AS leads
    FROM lead_events
    GROUP BY site_id, landing_path
) AS l USING (site_id, landing_path)
;

-- Landing pages of a site over a range of days.
CREATE OR REPLACE VIEW v_landing_pages_range AS
SELECT
    site_id,
    landing_path,
    sessions,
    visitors,
    leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate,
    engaged_sessions,
    if(sessions = 0, NULL, engaged_sessions / sessions) AS engagement_rate,
    revenue
FROM
(
    SELECT site_id, landing_path, sum(sessions) AS sessions, uniqExactMerge(visitors) AS visitors,
           sum(engaged_sessions) AS engaged_sessions, sumMap(revenue) AS revenue
    FROM landing_daily
    WHERE site_id = {site:String} AND day >= {from:Date} AND day <= {to:Date}
    GROUP BY site_id, landing_path
) AS s
FULL OUTER JOIN
(
    SELECT site_id, landing_path, uniqExact(lead_id) AS leads
    FROM lead_events
    WHERE site_id = {site:String} AND occurred_at >= toDateTime64({from:Date}, 3, 'UTC')
      AND occurred_at < toDateTime64({to:Date} + 1, 3, 'UTC')
    GROUP BY site_id, landing_path
) AS l USING (site_id, landing_path)
;

-- Channels and campaigns (first touch) over all of history; leads by their frozen last touch.
CREATE OR REPLACE VIEW v_channels AS
SELECT
    site_id,
    channel,
    utm_source,
    utm_medium,
    utm_campaign,
    sessions,
    visitors,
    leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate,
    engaged_sessions,
    if(sessions = 0, NULL, engaged_sessions / sessions) AS engagement_rate,
    revenue
FROM
(
    SELECT site_id, channel, utm_source, utm_medium, utm_campaign,
           sum(sessions) AS sessions, uniqExactMerge(visitors) AS visitors,
           sum(engaged_sessions) AS engaged_sessions, sumMap(revenue) AS revenue
    FROM channel_daily
    GROUP BY site_id, channel, utm_source, utm_medium, utm_campaign
) AS s
FULL OUTER JOIN
(
    SELECT site_id, last_touch.channel AS channel, last_touch.utm_source AS utm_source,
           last_touch.utm_medium AS utm_medium, last_touch.utm_campaign AS utm_campaign,
           uniqExact(lead_id) AS leads
    FROM lead_events
    GROUP BY site_id, channel, utm_source, utm_medium, utm_campaign
) AS l USING (site_id, channel, utm_source, utm_medium, utm_campaign)
;

-- Channels and campaigns of a site over a range of days.
CREATE OR REPLACE VIEW v_channels_range AS
SELECT
    site_id,
    channel,
    utm_source,
    utm_medium,
    utm_campaign,
    sessions,
    visitors,
    leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate,
    engaged_sessions,
    if(sessions = 0, NULL, engaged_sessions / sessions) AS engagement_rate,
    revenue
FROM
(
    SELECT site_id, channel, utm_source, utm_medium, utm_campaign,
           sum(sessions) AS sessions, uniqExactMerge(visitors) AS visitors,
           sum(engaged_sessions) AS engaged_sessions, sumMap(revenue) AS revenue
    FROM channel_daily
    WHERE site_id = {site:String} AND day >= {from:Date} AND day <= {to:Date}
    GROUP BY site_id, channel, utm_source, utm_medium, utm_campaign
) AS s
FULL OUTER JOIN
(
    SELECT site_id, last_touch.channel AS channel, last_touch.utm_source AS utm_source,
           last_touch.utm_medium AS utm_medium, last_touch.utm_campaign AS utm_campaign,
           uniqExact(lead_id) AS leads
    FROM lead_events
    WHERE site_id = {site:String} AND occurred_at >= toDateTime64({from:Date}, 3, 'UTC')
      AND occurred_at < toDateTime64({to:Date} + 1, 3, 'UTC')
    GROUP BY site_id, channel, utm_source, utm_medium, utm_campaign
) AS l USING (site_id, channel, utm_source, utm_medium, utm_campaign)
;
