-- Sessions, pre-aggregated per (site_id, session_id) as events arrive (PostHog's
-- sessions table works the same way). A session is what the beacon's session_id groups
-- (docs/architecture.md "Definitions"); its events may arrive in several flushes, so every column
-- is an aggregate state merged at read time by v_sessions:
--   SimpleAggregateFunction(min/max/sum/any): the merge is the function itself, stored plain;
--   argMin/argMax states for entry/exit path and first touch: "value at the earliest/latest
--   event", ordered by (ts, event_id) so ties resolve the same way in every merge order and
--   every re-ingestion (reproducible numbers);
--   groupUniqArrayArray for the variants seen.
-- Entry and exit paths consider page views only (a click before the first page view does not
-- make a landing page).
-- ORDER BY (site_id, session_id): the aggregation key; no partition, sessions are few next to
-- events and span midnight and month ends.
-- The dedup window must be set here too: a retried insert into `events` is dropped there by its
-- token, and only this window keeps the materialized view from counting it again.
CREATE TABLE IF NOT EXISTS sessions
(
    site_id       LowCardinality(String),
    session_id    String,
    anonymous_id  SimpleAggregateFunction(any, String),
    started_at    SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    ended_at      SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    pageviews     SimpleAggregateFunction(sum, UInt64),
    events        SimpleAggregateFunction(sum, UInt64),
    entry_path    AggregateFunction(argMin, String, Tuple(DateTime64(3, 'UTC'), String)),
    exit_path     AggregateFunction(argMax, String, Tuple(DateTime64(3, 'UTC'), String)),
    first_touch   AggregateFunction(argMin,
                      Tuple(String, String, String, String, String, String, String),
                      Tuple(DateTime64(3, 'UTC'), String)),
    variants      SimpleAggregateFunction(groupUniqArrayArray, Array(Tuple(String, String))),
    is_bot        SimpleAggregateFunction(max, UInt8)
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, session_id)
SETTINGS non_replicated_deduplication_window = 10000
;

CREATE MATERIALIZED VIEW IF NOT EXISTS sessions_mv TO sessions AS
SELECT
    site_id,
    session_id,
    any(anonymous_id) AS anonymous_id,
    min(ts) AS started_at,
    max(ts) AS ended_at,
    countIf(type = 'page_view') AS pageviews,
    count() AS events,
    argMinIfState(path, (ts, toString(event_id)), type = 'page_view') AS entry_path,
    argMaxIfState(path, (ts, toString(event_id)), type = 'page_view') AS exit_path,
    argMinState((utm_source, utm_medium, utm_campaign, utm_term, utm_content, referrer_host, channel),
                (ts, toString(event_id))) AS first_touch,
    groupUniqArrayArray(arrayZip(mapKeys(variants), mapValues(variants))) AS variants,
    max(is_bot) AS is_bot
FROM events
GROUP BY site_id, session_id
;
