-- The day roll-ups of 0101 as the built-in dashboard reads them (reports/dashboard/queries.py): one
-- row per roll-up row, visitors kept as the uniqExact state (`visitors_state`: the state's bytes in
-- hex, so every client reads the view as text; `CAST(unhex(visitors_state),
-- 'AggregateFunction(uniqExact, String)')` gives the state back), so a query merges exactly the days it
-- wants with the sessions of a part of a day (uniqExactState(anonymous_id) over v_sessions: same
-- type) into distinct visitors of any range [from, to) in milliseconds. A dashboard range rarely
-- starts and ends at midnight UTC: its whole days come from these rows, the two partial days from
-- v_sessions (session_facts, partitioned and ordered by the day a session started).
-- Plain views over one table each (nothing receives inserts): a WHERE on site_id and day reads those
-- days only (the roll-ups are ordered by (site_id, day, ...)). Human sessions only, as the roll-ups.

-- traffic_daily: per site and UTC day of session start; duration_ms is the sum of
-- (ended_at - started_at) in ms, so the average duration is duration_ms / 1000 / sessions.
CREATE OR REPLACE VIEW v_traffic_day_states AS
SELECT site_id, day, hex(CAST(visitors, 'String')) AS visitors_state, sessions, pageviews, bounces, duration_ms, engaged_sessions, engaged_ms
FROM traffic_daily
;

-- channel_daily: per site, day and first touch (channel, utm_source, utm_medium, utm_campaign).
CREATE OR REPLACE VIEW v_channel_day_states AS
SELECT site_id, day, channel, utm_source, utm_medium, utm_campaign, hex(CAST(visitors, 'String')) AS visitors_state, sessions, engaged_sessions, revenue
FROM channel_daily
;
