-- Definition versions of the roll-ups (reports/versions.py, sql/README.md "Definition versions").
--
-- Each roll-up records the version of the definition it was built with (reports/fold.py VERSIONS, next
-- to its SQL) as its table comment, `roll-up definition version N` (system.tables.comment). The
-- comment belongs to the table, so it moves with the rows when the fold switches a table to a new
-- version (EXCHANGE TABLES with its twin fold_next_<table>) and cannot disagree with them after a crash.
--
-- The rows already folded were built with the first definitions: version 1. A comment is metadata
-- only (no part is rewritten, nothing is refolded). A roll-up without a comment (e.g. a table added
-- by a later migration) is adopted at its declared version by the first fold of a fresh installation,
-- and built from history in the background on one the fold already ran on.
ALTER TABLE session_facts MODIFY COMMENT 'roll-up definition version 1';
ALTER TABLE traffic_daily MODIFY COMMENT 'roll-up definition version 1';
ALTER TABLE landing_daily MODIFY COMMENT 'roll-up definition version 1';
ALTER TABLE channel_daily MODIFY COMMENT 'roll-up definition version 1';
ALTER TABLE variant_daily MODIFY COMMENT 'roll-up definition version 1';

-- The days built into the twin of a pending table: one row per (build, day), `build_id` = the twin's
-- UUID (a twin created anew, after a crash or another change of definition, starts with no day), and
-- a start row (day 1970-01-01) written when the fold made the twin (only such a twin is resumed). The
-- build is complete, and the twin switched in, when every day of `events` and of first exposures is
-- here. Written by the fold only (no deduplication window: a day built twice is logged twice, harmless).
CREATE TABLE IF NOT EXISTS rollup_backfill
(
    table_name  LowCardinality(String),
    version     UInt32,
    build_id    UUID,
    day         Date,
    built_at    DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (build_id, day)
TTL toDateTime(built_at) + INTERVAL 90 DAY
;
