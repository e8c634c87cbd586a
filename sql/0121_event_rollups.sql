-- Event roll-ups for the built-in dashboard's Pages, Custom events and property panels, rebuilt whole
-- days at a time by the fold (reports/fold.py ROLLUP_SQL) from `events`, with the same SQL a recount
-- uses (`clickstream reconcile`), like the session roll-ups of 0101 (sql/README.md "Roll-ups and the
-- fold").
--
-- Which day an event belongs to: the UTC day its SESSION started, as in session_facts: the events of a
-- session are those of its start day and the next (a longer session is cut there, the same way in a
-- recount), and only human events (is_bot = 0) of human sessions (session_facts.is_bot = 0) count. So
-- "page views of the range" are the page views of the sessions started in the range, the definition
-- the session panels already use, and a filter (channel, campaign, landing page, variant: attributes of
-- the session) selects whole sessions with their events (reports/dashboard/queries.py).
-- PARTITION BY day, ORDER BY (site_id, day, …): a site and a range read those days only; the fold
-- swaps a day in with REPLACE PARTITION (atomic per table and day). One row per key and day, final:
-- plain sums, and uniqExactState(anonymous_id) (the event's visitor) for visitors, which merges exactly
-- across days. No deduplication window, on purpose (only the fold writes here: 0101 explains).

-- Page views per site, day and path.
CREATE TABLE IF NOT EXISTS page_daily
(
    site_id    LowCardinality(String),
    day        Date,
    path       String,
    pageviews  UInt64,
    visitors   AggregateFunction(uniqExact, String)
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (site_id, day, path)
;

-- Events per site, day and type (every type, page_view included).
CREATE TABLE IF NOT EXISTS event_type_daily
(
    site_id    LowCardinality(String),
    day        Date,
    type       LowCardinality(String),
    events     UInt64,
    visitors   AggregateFunction(uniqExact, String)
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (site_id, day, type)
;

-- Custom events (every type but page_view) per site, day, type and `props` key and value: an event
-- counts once per distinct key it carries, with that key's value (`props[key]`: the first, if a map
-- repeats a key). The property-key panel sums `events` per key; the breakdown of one key reads its rows.
CREATE TABLE IF NOT EXISTS event_prop_daily
(
    site_id    LowCardinality(String),
    day        Date,
    type       LowCardinality(String),
    key        String,
    value      String,
    events     UInt64,
    visitors   AggregateFunction(uniqExact, String)
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (site_id, day, key, type, value)
;

-- What the built-in dashboard reads (reports/dashboard/queries.py): the day roll-ups' rows with the
-- visitors' uniqExact states as they are stored, merged in SQL with uniqExactState(anonymous_id) of
-- the partial days, so only finished numbers leave the server. Not `v_*` views on purpose: a state
-- (AggregateFunction) has no type in BI clients' formats (Native, Arrow), and every `v_*` view is
-- part of the BI contract (tests/integration/query_port/test_clients.py reads each); SQL users have
-- v_traffic_day_states / v_channel_day_states (hex states) and the range views instead. Plain views
-- over one table each: a WHERE on site_id and day reads those days only.
CREATE OR REPLACE VIEW dashboard_traffic_days AS
SELECT site_id, day, visitors, sessions, pageviews, bounces, duration_ms
FROM traffic_daily
;

CREATE OR REPLACE VIEW dashboard_channel_days AS
SELECT site_id, day, channel, utm_source, utm_medium, utm_campaign, visitors, sessions, revenue
FROM channel_daily
;

CREATE OR REPLACE VIEW dashboard_page_days AS
SELECT site_id, day, path, pageviews, visitors
FROM page_daily
;

CREATE OR REPLACE VIEW dashboard_event_type_days AS
SELECT site_id, day, type, events, visitors
FROM event_type_daily
;

CREATE OR REPLACE VIEW dashboard_event_prop_days AS
SELECT site_id, day, type, key, value, events, visitors
FROM event_prop_daily
;

-- For SQL users and BI tools, over a range of UTC days (site, from, to: dates, both included; the
-- arguments may be expressions, as in 0102's range views): page views, events and custom event
-- properties of the sessions started in those days, visitors exact over the range.
--   SELECT path, pageviews, visitors FROM v_pages_range(site = 'shop.example', from = '2026-11-01', to = '2026-11-30')
CREATE OR REPLACE VIEW v_pages_range AS
SELECT site_id, path, sum(pageviews) AS pageviews, uniqExactMerge(visitors) AS visitors
FROM page_daily
WHERE site_id = {site:String} AND day >= {from:Date} AND day <= {to:Date}
GROUP BY site_id, path
;

CREATE OR REPLACE VIEW v_event_types_range AS
SELECT site_id, type, sum(events) AS events, uniqExactMerge(visitors) AS visitors
FROM event_type_daily
WHERE site_id = {site:String} AND day >= {from:Date} AND day <= {to:Date}
GROUP BY site_id, type
;

CREATE OR REPLACE VIEW v_event_props_range AS
SELECT site_id, type, key, value, sum(events) AS events, uniqExactMerge(visitors) AS visitors
FROM event_prop_daily
WHERE site_id = {site:String} AND day >= {from:Date} AND day <= {to:Date}
GROUP BY site_id, type, key, value
;
