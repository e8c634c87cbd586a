-- v_sessions with plain column types, for BI tools (docs/dashboards.md).
-- The `sessions` table keeps anonymous_id, started_at, ended_at and is_bot as
-- SimpleAggregateFunction(any|min|max, T) columns, and any()/min()/max() over such a column keep that
-- type, so v_sessions (0006, 0031) and v_lead_sessions, which reads it, declared e.g.
-- `SimpleAggregateFunction(min, DateTime64(3, 'UTC'))` where Metabase, Superset and Grafana expect a
-- DateTime64; likewise session_engagement's max_scroll_depth (0030). This is 0031's v_sessions with
-- those five columns CAST to their inner type: same rows and values, only the declared types change. A later redefinition of v_sessions keeps the CASTs.
CREATE OR REPLACE VIEW v_sessions AS
SELECT
    site_id,
    session_id,
    CAST(anonymous_id_ AS String) AS anonymous_id,
    CAST(started_at_ AS DateTime64(3, 'UTC')) AS started_at,
    CAST(ended_at_ AS DateTime64(3, 'UTC')) AS ended_at,
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
    CAST(is_bot_ AS UInt8) AS is_bot,
    e.engaged_ms AS engaged_ms,
    CAST(e.max_scroll_depth AS UInt8) AS max_scroll_depth,
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

-- Recreated unchanged: a view's column types are fixed when it is created, so v_lead_sessions keeps
-- its old types until it is created again over the new v_sessions.
-- Identity link (as in 0006): every session of the visitor behind each lead (anonymous_id -> lead_id).
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
