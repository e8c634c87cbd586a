-- Business events: `lead_created`, written only by the stitcher's relay, never into `events`.
-- Each row is frozen at stitch time: UTM, landing path and variants are copied values
-- (schemas/lead_created.schema.json), never references to sessions that may change later.
-- `payload` keeps the exact JSON the stitcher returned (byte for byte on a repeated stitch).
-- ORDER BY (site_id, occurred_at, lead_id): dashboards read leads by site and time.
-- The relay inserts with insert_deduplication_token = event_id, so a redelivery after a crash is
-- dropped here and (thanks to the window on `conversions`) not counted twice there.
CREATE TABLE IF NOT EXISTS lead_events
(
    event_id      UUID,
    lead_id       String,
    site_id       LowCardinality(String),
    anonymous_id  String,
    occurred_at   DateTime64(3, 'UTC'),
    session_id    String,
    landing_path  String,
    first_touch   Tuple(utm_source String, utm_medium String, utm_campaign String, utm_term String,
                        utm_content String, referrer_host String, channel String, landing_path String,
                        ts Nullable(DateTime64(3, 'UTC'))),
    last_touch    Tuple(utm_source String, utm_medium String, utm_campaign String, utm_term String,
                        utm_content String, referrer_host String, channel String, landing_path String,
                        ts Nullable(DateTime64(3, 'UTC'))),
    variants      Map(String, String),
    properties    String,
    payload       String,
    emitted_at    DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (site_id, occurred_at, lead_id)
SETTINGS non_replicated_deduplication_window = 10000
;

-- Conversions per visitor: how many leads and when the first and last happened. A visitor
-- exposed at time t is a converter when some lead happened at or after t, which is exactly
-- last_lead_at >= t (docs/architecture.md: converters have a lead_created after first exposure).
CREATE TABLE IF NOT EXISTS conversions
(
    site_id        LowCardinality(String),
    anonymous_id   String,
    leads          SimpleAggregateFunction(sum, UInt64),
    first_lead_at  SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_lead_at   SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, anonymous_id)
SETTINGS non_replicated_deduplication_window = 10000
;

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_mv TO conversions AS
SELECT site_id, anonymous_id, count() AS leads, min(occurred_at) AS first_lead_at, max(occurred_at) AS last_lead_at
FROM lead_events
GROUP BY site_id, anonymous_id
;
