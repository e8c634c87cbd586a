-- Engagement and revenue per session, pre-aggregated per (site_id, session_id) by their own
-- materialized view, beside `sessions` (0002) rather than in it: either can be redefined without
-- rebuilding the other, and the views (0031) join them.
-- Fed only by the events that carry what it keeps (a small fraction of `events`):
--   engaged_ms:       sum of `engagement` events' props.engaged_ms (beacon.js reports the time since
--                     its previous report, so the sum is the session's engaged time), each clamped to
--                     one day (a bogus value cannot dominate a sum),
--   max_scroll_depth: the deepest props.scroll_depth (%, clamped to 100) of any `engagement` event,
--   passive_events:   events the beacon sends without the visitor doing anything (`engagement`,
--                     `web_vitals`, `not_found`): they do not make a session engaged (0031),
--   revenue:          currency (props.currency, upper case) -> sum of props.revenue, for events whose
--                     revenue parses as a decimal (6 places; anything else is left out).
-- SimpleAggregateFunction: the merge is the function itself (sum, max, sumMap), stored plain.
-- ORDER BY (site_id, session_id): the key the views join on, as in `sessions`.
-- The dedup window must be set here too: a retried insert into `events` is dropped there by its
-- token, and only this window keeps the materialized view from counting it again.
CREATE TABLE IF NOT EXISTS session_engagement
(
    site_id          LowCardinality(String),
    session_id       String,
    engaged_ms       SimpleAggregateFunction(sum, UInt64),
    max_scroll_depth SimpleAggregateFunction(max, UInt8),
    passive_events   SimpleAggregateFunction(sum, UInt64),
    revenue          SimpleAggregateFunction(sumMap, Map(String, Decimal(38, 6)))
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, session_id)
SETTINGS non_replicated_deduplication_window = 10000
;

CREATE MATERIALIZED VIEW IF NOT EXISTS session_engagement_mv TO session_engagement AS
SELECT
    site_id,
    session_id,
    sumIf(least(toUInt64OrZero(props['engaged_ms']), 86400000), type = 'engagement') AS engaged_ms,
    maxIf(toUInt8(least(toUInt64OrZero(props['scroll_depth']), 100)), type = 'engagement') AS max_scroll_depth,
    countIf(type IN ('engagement', 'web_vitals', 'not_found')) AS passive_events,
    sumMapIf(map(upper(props['currency']), assumeNotNull(toDecimal128OrNull(props['revenue'], 6))),
             toDecimal128OrNull(props['revenue'], 6) IS NOT NULL) AS revenue
FROM events
WHERE type IN ('engagement', 'web_vitals', 'not_found') OR mapContains(props, 'revenue')
GROUP BY site_id, session_id
;
