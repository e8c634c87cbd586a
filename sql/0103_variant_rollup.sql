-- Experiments from a roll-up: `variant_daily` (per site, day, experiment and variant: exposed visitors
-- and converters), rebuilt whole days by the fold (reports/fold.py ROLLUP_SQL["variant_daily"]) like
-- the roll-ups of 0101, and the views v_variant_lift (all of history, columns unchanged) and
-- v_variant_lift_range (site, from, to) over it.
--
-- Definitions (unchanged from 0006's v_variant_lift, docs/architecture.md):
--   exposure: a non-bot event carrying `variants` {experiment_id: variant_id} (variant_exposures, 0003);
--   a visitor's variant: the variant of their first exposure in the experiment over all of history
--     (earliest time, ties by variant id; sticky assignment);
--   converter: a visitor with a lead_created at or after that first exposure, at any time (conversions, 0004).
-- The day of a visitor in an experiment is the UTC day of that first exposure, so each visitor is
-- in exactly one (day, variant) row of an experiment: sums over days are exact distinct counts (no
-- uniqExact state is needed; a range never counts a visitor twice). A range [from, to] is the
-- cohort of visitors first exposed in it; each of them converts if a lead came at or after their
-- first exposure, also after `to` (a visitor exposed on day 1 who converts on day 3 is a converter in
-- every range that holds day 1, and in no range without it). Over all days, v_variant_lift_range
-- equals v_variant_lift.
--
-- What makes a day dirty (the fold rebuilds it, reports/fold.py):
--   * an insert into `events` (fold_dirty_days_mv, 0101): the day of its events and the day before;
--   * a late exposure earlier than a visitor's first one moves the visitor to an earlier day: the fold
--     also rebuilds every later day on which the visitors first exposed on a rebuilt day have
--     exposures (their old day is one of them);
--   * a lead (`fold_dirty_visitors_mv` below): the day of the visitor's first exposure in each experiment.
-- No deduplication window on variant_daily (only the fold writes it, as 0101's roll-ups).
CREATE TABLE IF NOT EXISTS variant_daily
(
    site_id        LowCardinality(String),
    day            Date,
    experiment_id  String,
    variant_id     String,
    visitors       UInt64,
    converters     UInt64
)
ENGINE = MergeTree
PARTITION BY day
ORDER BY (site_id, day, experiment_id, variant_id)
;

-- Visitors with a new lead: the fold reads the marks of the parts it sees, rebuilds their first
-- exposure days, then drops those parts (as fold_dirty_days, 0101). The deduplication window is
-- needed as on every materialized-view target: a redelivered lead dropped by lead_events is dropped here.
CREATE TABLE IF NOT EXISTS fold_dirty_visitors
(
    site_id       LowCardinality(String),
    anonymous_id  String,
    marked_at     DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (marked_at, site_id, anonymous_id)
SETTINGS non_replicated_deduplication_window = 10000
;

CREATE MATERIALIZED VIEW IF NOT EXISTS fold_dirty_visitors_mv TO fold_dirty_visitors AS
SELECT DISTINCT site_id, anonymous_id, now64(6, 'UTC') AS marked_at
FROM lead_events
;

-- All of history: same columns and statistics as 0006 (control: 'control' when present, else the
-- first variant by name; lift = rate / control rate - 1; z, p_value: pooled two-proportion z-test;
-- ci95_low / ci95_high: Wald interval of the rate difference).
CREATE OR REPLACE VIEW v_variant_lift AS
WITH
    per_variant AS
    (
        SELECT site_id, experiment_id, variant_id, sum(visitors) AS visitors, sum(converters) AS converters
        FROM variant_daily
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

-- The cohort of visitors first exposed between `from` and `to` (UTC dates, both included) on `site`:
-- the columns of v_variant_lift, and first_day / last_day, the first and last day of the range with
-- first exposures to the variant. The control is chosen among the variants with visitors in the range.
CREATE OR REPLACE VIEW v_variant_lift_range AS
WITH
    per_variant AS
    (
        SELECT site_id, experiment_id, variant_id, min(day) AS first_day, max(day) AS last_day,
               sum(visitors) AS visitors, sum(converters) AS converters
        FROM variant_daily
        WHERE site_id = {site:String} AND day >= {from:Date} AND day <= {to:Date}
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
               v.first_day AS first_day, v.last_day AS last_day,
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
    if(is_control, NULL, test.confidence_interval_high) AS ci95_high,
    first_day,
    last_day
FROM
(
    SELECT *, proportionsZTest(converters, control_converters, visitors, control_visitors, 0.95, 'pooled') AS test
    FROM paired
)
;
