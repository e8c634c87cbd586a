-- Data-skipping indexes for the look-ups that do not follow the ORDER BY of `events`:
-- the stitcher reads one visitor's events (anonymous_id) and audits look up event ids.
-- bloom_filter: a false positive costs a granule read, never a wrong answer.
-- ADD INDEX applies to parts written from now on (MATERIALIZE INDEX would rewrite old parts).
ALTER TABLE events ADD INDEX IF NOT EXISTS idx_anonymous_id anonymous_id TYPE bloom_filter(0.01) GRANULARITY 4
;
ALTER TABLE events ADD INDEX IF NOT EXISTS idx_event_id event_id TYPE bloom_filter(0.01) GRANULARITY 4
;
