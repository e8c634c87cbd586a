-- The dashboard views of 0006 with engagement and revenue (session_engagement, 0030) joined in, and
-- bounce redefined so that the beacon's automatic reports do not count as a visit going somewhere.
-- Each view is the 0006 definition plus the new columns; a later redefinition of the session
-- roll-up replaces the `sessions` part of v_sessions and keeps the join.
--
-- Definitions (docs/architecture.md "Definitions"; GA4's "engaged session", Google Analytics Help
-- "[GA4] Engagement rate and bounce rate"):
--   engaged session: at least 2 page views, or an interaction (an event other than page_view and
--     the passive `engagement`, `web_vitals`, `not_found`), or more than 10 s of engagement
--     (engaged_ms > 10000, the sum of the session's engagement reports),
--   bounce: a session with exactly one page view that is not engaged. A session with one page view
--     and an engagement report is still a bounce unless that engagement lasted over 10 s.
--   engagement_rate = engaged sessions / sessions.
-- Sessions without a row in session_engagement (no engagement, vitals or revenue, e.g. events
-- flushed before 0030) join as 0 / empty: for them bounce is what it was (one page view, no other
-- event).

CREATE OR REPLACE VIEW v_sessions AS
SELECT
    site_id,
    session_id,
    anonymous_id_ AS anonymous_id,
    started_at_ AS started_at,
    ended_at_ AS ended_at,
    (toUnixTimestamp64Milli(ended_at_) - toUnixTimestamp64Milli(started_at_)) / 1000 AS duration_s,
    pageviews_ AS pageviews,
    events_ AS events,
    entry_path_ AS entry_path,
    exit_path_ AS exit_path,
    touch.1 AS utm_source,
    touch.2 AS utm_medium,
    touch.3 AS utm_campaign,
    touch.4 AS utm_term,
    touch.5 AS utm_content,
    touch.6 AS referrer_host,
    touch.7 AS channel,
    variants_ AS variants,
    is_bot_ AS is_bot,
    e.engaged_ms AS engaged_ms,
    e.max_scroll_depth AS max_scroll_depth,
    e.revenue AS revenue,
    toUInt8(pageviews_ >= 2 OR events_ - pageviews_ > e.passive_events OR e.engaged_ms > 10000) AS is_engaged,
    toUInt8(pageviews_ = 1 AND NOT is_engaged) AS is_bounce
FROM
(
    SELECT
        site_id,
        session_id,
        any(anonymous_id) AS anonymous_id_,
        min(started_at) AS started_at_,
        max(ended_at) AS ended_at_,
        sum(pageviews) AS pageviews_,
        sum(events) AS events_,
        argMinMerge(entry_path) AS entry_path_,
        argMaxMerge(exit_path) AS exit_path_,
        argMinMerge(first_touch) AS touch,
        arraySort(groupUniqArrayArray(variants)) AS variants_,
        max(is_bot) AS is_bot_
    FROM sessions
    GROUP BY site_id, session_id
) AS s
LEFT JOIN
(
    SELECT site_id, session_id, sum(engaged_ms) AS engaged_ms, max(max_scroll_depth) AS max_scroll_depth,
           sum(passive_events) AS passive_events, sumMap(revenue) AS revenue
    FROM session_engagement
    GROUP BY site_id, session_id
) AS e USING (site_id, session_id)
;

-- Traffic per UTC day of session start, with engaged sessions and the average engaged time.
CREATE OR REPLACE VIEW v_daily_traffic AS
SELECT
    site_id,
    toDate(started_at) AS day,
    uniqExact(anonymous_id) AS visitors,
    count() AS sessions,
    sum(pageviews) AS pageviews,
    avg(is_bounce) AS bounce_rate,
    avg(duration_s) AS avg_duration_s,
    sum(is_engaged) AS engaged_sessions,
    avg(is_engaged) AS engagement_rate,
    avg(engaged_ms) / 1000 AS avg_engaged_s
FROM v_sessions
WHERE is_bot = 0
GROUP BY site_id, day
;

-- Landing pages, with their sessions' engagement rate and revenue (currency -> sum of the revenue of
-- the sessions that landed there).
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
    SELECT site_id, entry_path AS landing_path, count() AS sessions, uniqExact(anonymous_id) AS visitors,
           sum(is_engaged) AS engaged_sessions, sumMap(revenue) AS revenue
    FROM v_sessions
    WHERE is_bot = 0 AND pageviews > 0
    GROUP BY site_id, landing_path
) AS s
FULL OUTER JOIN
(
    SELECT site_id, landing_path, uniqExact(lead_id) AS leads
    FROM lead_events
    GROUP BY site_id, landing_path
) AS l USING (site_id, landing_path)
;

-- Channels and campaigns (the session's first touch), with engagement rate and revenue of those
-- sessions; leads by their frozen last touch as in 0006.
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
           count() AS sessions, uniqExact(anonymous_id) AS visitors,
           sum(is_engaged) AS engaged_sessions, sumMap(revenue) AS revenue
    FROM v_sessions
    WHERE is_bot = 0
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
