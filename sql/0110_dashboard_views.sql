-- Views for the built-in dashboard (reports/dashboard, docs/dashboards.md "The built-in dashboard")
-- and for SQL users: human events with their props, leads flattened, and funnels on windowFunnel.
-- Views only: nothing here receives inserts, so nothing needs a dedup window or a sharding key.

-- Every human event (bots left out, as in every view but v_sessions) with its type, page path and
-- props, for custom events and their properties. `props` is Map(String, String): a number sent in
-- props (e.g. `revenue`) is its decimal text; `toFloat64OrNull(props['revenue'])` reads it back.
CREATE OR REPLACE VIEW v_events AS
SELECT site_id, ts, event_id, type, anonymous_id, session_id, path, channel, utm_source, utm_medium,
       utm_campaign, utm_term, utm_content, variants, props
FROM events
WHERE is_bot = 0
;

-- One row per lead_created, its frozen attribution flattened: the plain attribution columns are the
-- LAST touch (channel, utm_*, referrer_host: what v_channels counts leads by), first_* the first
-- touch; `variants` has v_sessions' type (sorted (experiment, variant) pairs) so one filter reads both.
CREATE OR REPLACE VIEW v_leads_last_touch AS
SELECT
    site_id,
    lead_id,
    occurred_at,
    anonymous_id,
    session_id,
    landing_path,
    last_touch.channel AS channel,
    last_touch.utm_source AS utm_source,
    last_touch.utm_medium AS utm_medium,
    last_touch.utm_campaign AS utm_campaign,
    last_touch.utm_term AS utm_term,
    last_touch.utm_content AS utm_content,
    last_touch.referrer_host AS referrer_host,
    last_touch.landing_path AS last_touch_landing_path,
    first_touch.channel AS first_channel,
    first_touch.utm_source AS first_utm_source,
    first_touch.utm_medium AS first_utm_medium,
    first_touch.utm_campaign AS first_utm_campaign,
    first_touch.utm_term AS first_utm_term,
    first_touch.utm_content AS first_utm_content,
    first_touch.referrer_host AS first_referrer_host,
    first_touch.landing_path AS first_touch_landing_path,
    arraySort(arrayZip(mapKeys(variants), mapValues(variants))) AS variants
FROM lead_events
;

-- Funnels (parameterized views): an ordered list of steps, each a page path (starting with "/":
-- a page_view of that path) or an event type; ClickHouse's windowFunnel finds, per visitor
-- (v_funnel) or per session (v_funnel_sessions), the longest chain of steps in order whose
-- events all lie within `window_s` seconds of the first step's event, over the events with
-- `from` <= ts < `to`. Timestamps in milliseconds, so events in the same second keep their order.
-- At most 8 steps (the slots below; a slot past the end of `steps` is '' and matches nothing).
--   SELECT * FROM v_funnel(site_id = 'shop.example', steps = ['/', '/pricing', 'cta_click'],
--                          window_s = 3600, from = '2026-11-01 00:00:00', to = '2026-12-01 00:00:00')
-- Columns: step (1-based), name, reached (visitors or sessions that got at least this far),
-- conversion_rate (reached / reached at step 1), drop_off (1 - reached / reached at the step before;
-- 0 at step 1).
CREATE OR REPLACE VIEW v_funnel AS
WITH {steps:Array(String)} AS steps
SELECT step, steps[step] AS name, reached,
       if(first_value(reached) OVER w = 0, 0, reached / first_value(reached) OVER w) AS conversion_rate,
       if(step = 1 OR lagInFrame(reached) OVER w = 0, 0, 1 - reached / lagInFrame(reached) OVER w) AS drop_off
FROM
(
    SELECT arrayJoin(arrayEnumerate(steps)) AS step, countIf(level >= step) AS reached
    FROM
    (
        SELECT anonymous_id,
               windowFunnel({window_s:UInt64} * 1000)(
                   toUInt64(toUnixTimestamp64Milli(ts)),
                   if(startsWith(steps[1], '/'), type = 'page_view' AND path = steps[1], type = steps[1]),
                   if(startsWith(steps[2], '/'), type = 'page_view' AND path = steps[2], type = steps[2]),
                   if(startsWith(steps[3], '/'), type = 'page_view' AND path = steps[3], type = steps[3]),
                   if(startsWith(steps[4], '/'), type = 'page_view' AND path = steps[4], type = steps[4]),
                   if(startsWith(steps[5], '/'), type = 'page_view' AND path = steps[5], type = steps[5]),
                   if(startsWith(steps[6], '/'), type = 'page_view' AND path = steps[6], type = steps[6]),
                   if(startsWith(steps[7], '/'), type = 'page_view' AND path = steps[7], type = steps[7]),
                   if(startsWith(steps[8], '/'), type = 'page_view' AND path = steps[8], type = steps[8])
               ) AS level
        FROM v_events
        WHERE site_id = {site_id:String} AND ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')}
        GROUP BY anonymous_id
    )
    GROUP BY step
)
WINDOW w AS (ORDER BY step ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
ORDER BY step
;

-- The same funnel per session: a chain counts only within one session (reached = sessions).
CREATE OR REPLACE VIEW v_funnel_sessions AS
WITH {steps:Array(String)} AS steps
SELECT step, steps[step] AS name, reached,
       if(first_value(reached) OVER w = 0, 0, reached / first_value(reached) OVER w) AS conversion_rate,
       if(step = 1 OR lagInFrame(reached) OVER w = 0, 0, 1 - reached / lagInFrame(reached) OVER w) AS drop_off
FROM
(
    SELECT arrayJoin(arrayEnumerate(steps)) AS step, countIf(level >= step) AS reached
    FROM
    (
        SELECT session_id,
               windowFunnel({window_s:UInt64} * 1000)(
                   toUInt64(toUnixTimestamp64Milli(ts)),
                   if(startsWith(steps[1], '/'), type = 'page_view' AND path = steps[1], type = steps[1]),
                   if(startsWith(steps[2], '/'), type = 'page_view' AND path = steps[2], type = steps[2]),
                   if(startsWith(steps[3], '/'), type = 'page_view' AND path = steps[3], type = steps[3]),
                   if(startsWith(steps[4], '/'), type = 'page_view' AND path = steps[4], type = steps[4]),
                   if(startsWith(steps[5], '/'), type = 'page_view' AND path = steps[5], type = steps[5]),
                   if(startsWith(steps[6], '/'), type = 'page_view' AND path = steps[6], type = steps[6]),
                   if(startsWith(steps[7], '/'), type = 'page_view' AND path = steps[7], type = steps[7]),
                   if(startsWith(steps[8], '/'), type = 'page_view' AND path = steps[8], type = steps[8])
               ) AS level
        FROM v_events
        WHERE site_id = {site_id:String} AND ts >= {from:DateTime64(3, 'UTC')} AND ts < {to:DateTime64(3, 'UTC')}
        GROUP BY session_id
    )
    GROUP BY step
)
WINDOW w AS (ORDER BY step ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
ORDER BY step
;
