-- The fold's marks name the site as well as the day (reports/fold.py `dirty_sites`, `build_day`):
-- every roll-up row belongs to one site and is computed from that site's events only, so a day
-- marked by one site's events is rebuilt for that site alone, the other sites' rows of the day kept
-- as they are. An import of one site's history (`clickstream import --flush`) then no longer
-- recomputes every other site's sessions of the days it touches (BENCHMARKS.md "Import").
--
-- A mark written before this migration has site_id '' (the column's default): its day is rebuilt
-- for every site, as before. The materialized view is dropped and created again in one migration,
-- applied at start before the flusher inserts (as sql/0100_event_order.sql does for events_ingest_mv).
ALTER TABLE fold_dirty_days ADD COLUMN IF NOT EXISTS site_id String DEFAULT ''
;
DROP VIEW IF EXISTS fold_dirty_days_mv
;
CREATE MATERIALIZED VIEW IF NOT EXISTS fold_dirty_days_mv TO fold_dirty_days AS
SELECT DISTINCT site_id, arrayJoin([toDate(ts), toDate(ts) - 1]) AS day, now64(6, 'UTC') AS marked_at
FROM events
;
