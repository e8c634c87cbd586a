-- Dashboard views: the contract of docs/architecture.md ("Views are the dashboard contract").
-- CREATE OR REPLACE keeps the migration idempotent and lets a later release redefine a view.
-- Bots (crawlerdetect / ua-parser "Spider") are kept in v_sessions with is_bot = 1 and left out
-- of every other view.

-- One row per session, merging the aggregate states of `sessions`.
-- duration_s = ended_at - started_at in seconds (ms precision); is_bounce = exactly one page
-- view and no other event. utm_*, referrer_host and channel are the session's first touch
-- (its earliest event).
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
    toUInt8(pageviews_ = 1 AND events_ = 1) AS is_bounce
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
)
;

-- Traffic per UTC day of session start.
CREATE OR REPLACE VIEW v_daily_traffic AS
SELECT
    site_id,
    toDate(started_at) AS day,
    uniqExact(anonymous_id) AS visitors,
    count() AS sessions,
    sum(pageviews) AS pageviews,
    avg(is_bounce) AS bounce_rate,
    avg(duration_s) AS avg_duration_s
FROM v_sessions
WHERE is_bot = 0
GROUP BY site_id, day
;

-- Landing pages: sessions by entry path; leads by the frozen landing_path of lead_created
-- (the converting session's landing page). conversion_rate = leads / sessions.
CREATE OR REPLACE VIEW v_landing_pages AS
SELECT
    site_id,
    landing_path,
    sessions,
    visitors,
    leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate
FROM
(
    SELECT site_id, entry_path AS landing_path, count() AS sessions, uniqExact(anonymous_id) AS visitors
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

-- Channels and campaigns: sessions by their first touch; leads by the frozen last touch of
-- lead_created (last non-direct click, GA's default attribution).
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
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate
FROM
(
    SELECT site_id, channel, utm_source, utm_medium, utm_campaign,
           count() AS sessions, uniqExact(anonymous_id) AS visitors
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

-- A/B lift per variant against the experiment's control ('control' when present, else the
-- first variant by name). A visitor belongs to the variant of their first exposure in the
-- experiment (sticky assignment: a later exposure to another variant does not move them, so a
-- frozen lead never changes these numbers). Converters: visitors with a lead_created at or after
-- that first exposure. z and p_value come from ClickHouse's proportionsZTest with a pooled
-- standard error (equal to statsmodels' proportions_ztest); ci95_low/ci95_high bound the
-- difference in conversion rate (variant - control), Wald with unpooled standard error (equal to
-- statsmodels' confint_proportions_2indep(method="wald", compare="diff")). lift = rate / control rate - 1 (NULL for the
-- control row and when the control rate is 0).
CREATE OR REPLACE VIEW v_variant_lift AS
WITH
    exposed AS
    (
        -- one level: the earliest (time, variant) over the unmerged rows is the earliest over the
        -- merged ones, so the per-variant merge of variant_exposures is not needed first
        SELECT site_id, experiment_id, anonymous_id,
               argMin(variant_id_, (first_exposed_at, variant_id_)) AS variant_id,
               min(first_exposed_at) AS first_at
        FROM (SELECT site_id, experiment_id, variant_id AS variant_id_, anonymous_id, first_exposed_at
              FROM variant_exposures)
        GROUP BY site_id, experiment_id, anonymous_id
    ),
    per_variant AS
    (
        SELECT e.site_id AS site_id, e.experiment_id AS experiment_id, e.variant_id AS variant_id,
               count() AS visitors,
               countIf(c.last_lead_at >= e.first_at) AS converters
        FROM exposed AS e
        LEFT JOIN
        (
            SELECT site_id, anonymous_id, max(last_lead_at) AS last_lead_at
            FROM conversions
            GROUP BY site_id, anonymous_id
        ) AS c ON e.site_id = c.site_id AND e.anonymous_id = c.anonymous_id
        GROUP BY site_id, experiment_id, variant_id
    ),
    controls AS
    (
        SELECT site_id, experiment_id,
               if(countIf(variant_id = 'control') > 0, 'control', min(variant_id)) AS control_id
        FROM per_variant
        GROUP BY site_id, experiment_id
    ),
    paired AS
    (
        SELECT v.site_id AS site_id, v.experiment_id AS experiment_id, v.variant_id AS variant_id,
               toUInt8(v.variant_id = k.control_id) AS is_control,
               v.visitors AS visitors, v.converters AS converters,
               c.visitors AS control_visitors, c.converters AS control_converters
        FROM per_variant AS v
        INNER JOIN controls AS k ON v.site_id = k.site_id AND v.experiment_id = k.experiment_id
        INNER JOIN per_variant AS c
            ON c.site_id = k.site_id AND c.experiment_id = k.experiment_id AND c.variant_id = k.control_id
    )
SELECT
    site_id,
    experiment_id,
    variant_id,
    is_control,
    visitors,
    converters,
    converters / visitors AS conversion_rate,
    control_visitors,
    control_converters,
    if(is_control OR control_converters = 0, NULL,
       (converters / visitors) / (control_converters / control_visitors) - 1) AS lift,
    if(is_control, NULL, test.z_statistic) AS z,
    if(is_control, NULL, test.p_value) AS p_value,
    if(is_control, NULL, test.confidence_interval_low) AS ci95_low,
    if(is_control, NULL, test.confidence_interval_high) AS ci95_high
FROM
(
    SELECT *, proportionsZTest(converters, control_converters, visitors, control_visitors, 0.95, 'pooled') AS test
    FROM paired
)
;

-- Identity link: every session of the visitor behind each lead (anonymous_id -> lead_id).
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
