-- Variant exposures: per (site_id, experiment_id, variant_id) the exact set of exposed
-- anonymous ids, each with its first exposure time. One row per visitor and variant, so counts
-- are exact (uniqExact over the key), never HyperLogLog estimates: lift statistics on
-- approximate counts mislead at small samples.
-- An exposure is any non-bot event carrying `variants` {experiment_id: variant_id}.
-- SimpleAggregateFunction(min): merging keeps the earliest exposure.
-- Dedup window: see 0002_sessions.sql.
CREATE TABLE IF NOT EXISTS variant_exposures
(
    site_id           LowCardinality(String),
    experiment_id     String,
    variant_id        String,
    anonymous_id      String,
    first_exposed_at  SimpleAggregateFunction(min, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (site_id, experiment_id, variant_id, anonymous_id)
SETTINGS non_replicated_deduplication_window = 10000
;

CREATE MATERIALIZED VIEW IF NOT EXISTS variant_exposures_mv TO variant_exposures AS
SELECT
    site_id,
    experiment.1 AS experiment_id,
    experiment.2 AS variant_id,
    anonymous_id,
    min(ts) AS first_exposed_at
FROM events
ARRAY JOIN arrayZip(mapKeys(variants), mapValues(variants)) AS experiment
WHERE is_bot = 0
GROUP BY site_id, experiment_id, variant_id, anonymous_id
;
