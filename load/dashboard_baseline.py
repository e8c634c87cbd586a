"""The dashboard's panel queries as they were before they read the roll-ups: the baseline of
load/bench_dashboard.py (same page, same data, same run; only the SQL the page gets differs).

A frozen copy of reports/dashboard/queries.py's QUERIES at commit 3b08d2e (every session panel on
v_sessions, every event panel on v_events with the filtered sessions as an IN sub-query and no upper
bound on event time). Not used by the product.
"""

from __future__ import annotations

from typing import Final

from reports.dashboard.queries import MAX_FUNNEL_STEPS, SOURCE_DIMENSIONS, parameters


def _filters(landing: str) -> str:
    """The filter conditions on v_sessions (landing = entry_path) or v_leads_last_touch (landing = landing_path)."""
    parts = [f"({{{name}:String}} = '' OR {name} = {{{name}:String}})" for name in SOURCE_DIMENSIONS]
    parts.append(f"({{page:String}} = '' OR {landing} = {{page:String}})")
    parts.append("({experiment:String} = '' OR has(variants, ({experiment:String}, {variant:String})))")
    return " AND ".join(parts)


def _ms(name: str) -> str:
    return f"fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC')"


#: Sessions of the site in [lower, to) passing the filters (v_sessions).
def _sessions_where(lower: str = "from_ms") -> str:
    return (f"site_id = {{site:String}} AND is_bot = 0 AND started_at >= {_ms(lower)} AND started_at < {_ms('to_ms')}"
            f" AND {_filters('entry_path')}")


def _leads_where(lower: str = "from_ms") -> str:
    return (f"site_id = {{site:String}} AND occurred_at >= {_ms(lower)} AND occurred_at < {_ms('to_ms')}"
            f" AND {_filters('landing_path')}")


#: The sessions of _sessions_where, for panels over v_events (their events, whenever they happened).
_SESSION_IDS = f"session_id IN (SELECT session_id FROM v_sessions WHERE {_sessions_where()})"
_EVENTS_WHERE = f"site_id = {{site:String}} AND ts >= {_ms('from_ms')} AND {_SESSION_IDS}"


def _source_query(dimension: str) -> str:
    return f"""
SELECT key, s.sessions AS sessions, s.visitors AS visitors, l.leads AS leads,
       if(s.sessions = 0, 0, l.leads / s.sessions) AS conversion_rate, s.revenue AS revenue
FROM (SELECT {dimension} AS key, count() AS sessions, uniqExact(anonymous_id) AS visitors, sumMap(revenue) AS revenue
      FROM v_sessions WHERE {_sessions_where()} GROUP BY key) AS s
FULL OUTER JOIN (SELECT {dimension} AS key, count() AS leads FROM v_leads_last_touch
                 WHERE {_leads_where()} GROUP BY key) AS l
USING key
ORDER BY sessions DESC, leads DESC, key
LIMIT 50"""


#: A funnel on the filtered sessions' events: sql/0110_dashboard_views.sql's v_funnel with the
#: page's filters, per visitor (per_session = 0) or per session (1). Steps: '/path' = a page view
#: of that path, else an event type.
_FUNNEL_STEP = "if(startsWith(steps[{k}], '/'), type = 'page_view' AND path = steps[{k}], type = steps[{k}])"
_FUNNEL = f"""
WITH {{steps:Array(String)}} AS steps
SELECT step, steps[step] AS name, reached,
       if(first_value(reached) OVER w = 0, 0, reached / first_value(reached) OVER w) AS conversion_rate,
       if(step = 1 OR lagInFrame(reached) OVER w = 0, 0, 1 - reached / lagInFrame(reached) OVER w) AS drop_off
FROM
(
    SELECT arrayJoin(arrayEnumerate(steps)) AS step, countIf(level >= step) AS reached
    FROM
    (
        SELECT if({{per_session:UInt8}} = 1, session_id, anonymous_id) AS unit,
               windowFunnel({{window_s:UInt64}} * 1000)(toUInt64(toUnixTimestamp64Milli(ts)),
                   {", ".join(_FUNNEL_STEP.format(k=k) for k in range(1, MAX_FUNNEL_STEPS + 1))}) AS level
        FROM v_events
        WHERE {_EVENTS_WHERE}
        GROUP BY unit
    )
    GROUP BY step
)
WINDOW w AS (ORDER BY step ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
ORDER BY step"""

#: name -> SQL text. Each returns what the panel of the same name shows.
QUERIES: Final[dict[str, str]] = {
    # The site picker: every site with human sessions; a site not listed has no events yet (the empty
    # state: "add this script tag").
    "sites": "SELECT site_id FROM v_daily_traffic GROUP BY site_id ORDER BY site_id",
    # Totals of [from, to) and of the period before it, [prev_from, from) (same length); *_change is
    # relative (x / previous - 1, NULL without a previous value) for counts and durations, and the
    # difference in rate (points as a fraction) for bounce_rate and conversion_rate.
    "totals": f"""
WITH
    (SELECT countIf(occurred_at >= {_ms('from_ms')}) FROM v_leads_last_touch
     WHERE {_leads_where('prev_from_ms')}) AS leads,
    (SELECT countIf(occurred_at < {_ms('from_ms')}) FROM v_leads_last_touch
     WHERE {_leads_where('prev_from_ms')}) AS prev_leads
SELECT
    uniqExactIf(visitor, cur) AS visitors, uniqExactIf(visitor, NOT cur) AS prev_visitors,
    countIf(cur) AS sessions, countIf(NOT cur) AS prev_sessions,
    sumIf(views, cur) AS pageviews, sumIf(views, NOT cur) AS prev_pageviews,
    if(sessions = 0, NULL, countIf(bounce AND cur) / sessions) AS bounce_rate,
    if(prev_sessions = 0, NULL, countIf(bounce AND NOT cur) / prev_sessions) AS prev_bounce_rate,
    if(sessions = 0, NULL, sumIf(seconds, cur) / sessions) AS avg_duration_s,
    if(prev_sessions = 0, NULL, sumIf(seconds, NOT cur) / prev_sessions) AS prev_avg_duration_s,
    leads, prev_leads,
    if(sessions = 0, NULL, leads / sessions) AS conversion_rate,
    if(prev_sessions = 0, NULL, prev_leads / prev_sessions) AS prev_conversion_rate,
    if(prev_visitors = 0, NULL, visitors / prev_visitors - 1) AS visitors_change,
    if(prev_sessions = 0, NULL, sessions / prev_sessions - 1) AS sessions_change,
    if(prev_pageviews = 0, NULL, pageviews / prev_pageviews - 1) AS pageviews_change,
    bounce_rate - prev_bounce_rate AS bounce_rate_change,
    if(prev_avg_duration_s = 0, NULL, avg_duration_s / prev_avg_duration_s - 1) AS avg_duration_s_change,
    if(prev_leads = 0, NULL, leads / prev_leads - 1) AS leads_change,
    conversion_rate - prev_conversion_rate AS conversion_rate_change
FROM (SELECT anonymous_id AS visitor, pageviews AS views, is_bounce AS bounce, duration_s AS seconds,
             started_at >= {_ms('from_ms')} AS cur
      FROM v_sessions WHERE {_sessions_where('prev_from_ms')})""",
    # Traffic over time: buckets of bucket_s seconds (3600 for ranges of 2 days or less, else 86400),
    # epoch seconds UTC at the bucket's start.
    "traffic": f"""
SELECT toUnixTimestamp(toStartOfInterval(started_at, toIntervalSecond({{bucket_s:UInt32}}))) AS t,
       uniqExact(anonymous_id) AS visitors, count() AS sessions, sum(pageviews) AS pageviews
FROM v_sessions WHERE {_sessions_where()}
GROUP BY t ORDER BY t""",
    **{f"sources_{dimension}": _source_query(dimension) for dimension in SOURCE_DIMENSIONS},
    # Top pages: page views of the filtered sessions per path.
    "pages_top": f"""
SELECT path, count() AS pageviews, uniqExact(anonymous_id) AS visitors
FROM v_events WHERE type = 'page_view' AND {_EVENTS_WHERE}
GROUP BY path ORDER BY pageviews DESC, path LIMIT 50""",
    # Landing pages with leads (frozen landing_path) and conversion rate = leads / sessions, revenue.
    "pages_landing": f"""
SELECT path, s.sessions AS sessions, s.visitors AS visitors, l.leads AS leads,
       if(s.sessions = 0, 0, l.leads / s.sessions) AS conversion_rate, s.revenue AS revenue
FROM (SELECT entry_path AS path, count() AS sessions, uniqExact(anonymous_id) AS visitors,
             sumMap(revenue) AS revenue
      FROM v_sessions WHERE {_sessions_where()} GROUP BY path) AS s
FULL OUTER JOIN (SELECT landing_path AS path, count() AS leads FROM v_leads_last_touch
                 WHERE {_leads_where()} GROUP BY path) AS l
USING path
ORDER BY sessions DESC, leads DESC, path LIMIT 50""",
    # Exit pages: the last page view of each session.
    "pages_exit": f"""
SELECT exit_path AS path, count() AS sessions, uniqExact(anonymous_id) AS visitors
FROM v_sessions WHERE {_sessions_where()}
GROUP BY path ORDER BY sessions DESC, path LIMIT 50""",
    # Custom events: every type but page_view, with unique visitors.
    "events_types": f"""
SELECT type, count() AS events, uniqExact(anonymous_id) AS visitors
FROM v_events WHERE type != 'page_view' AND {_EVENTS_WHERE}
GROUP BY type ORDER BY events DESC, type LIMIT 100""",
    # Property keys seen on those events (the breakdown's picker).
    "events_prop_keys": f"""
SELECT arrayJoin(mapKeys(props)) AS key, count() AS events
FROM v_events WHERE type != 'page_view' AND {_EVENTS_WHERE}
GROUP BY key ORDER BY events DESC, key LIMIT 100""",
    # One property's values per event type.
    "events_props": f"""
SELECT type, props[{{prop_key:String}}] AS value, count() AS events, uniqExact(anonymous_id) AS visitors
FROM v_events WHERE type != 'page_view' AND mapContains(props, {{prop_key:String}}) AND {_EVENTS_WHERE}
GROUP BY type, value ORDER BY events DESC, type, value LIMIT 100""",
    "funnel": _FUNNEL,
    # The latest leads with their frozen first and last touch, landing page and variants.
    "leads": f"""
SELECT lead_id, toUnixTimestamp64Milli(occurred_at) AS occurred_at_ms, landing_path,
       first_channel, first_utm_source, first_utm_campaign, channel, utm_source, utm_campaign, variants
FROM v_leads_last_touch WHERE {_leads_where()}
ORDER BY occurred_at DESC, lead_id LIMIT 20""",
    # Live (no filters, no range): visitors with an event in the last 5 minutes, and their pages now.
    "live_visitors": """
SELECT uniqExact(anonymous_id) AS visitors
FROM v_events WHERE site_id = {site:String} AND ts >= now64(3) - INTERVAL 5 MINUTE""",
    "live_pages": """
SELECT path, uniqExact(anonymous_id) AS visitors
FROM v_events WHERE site_id = {site:String} AND type = 'page_view' AND ts >= now64(3) - INTERVAL 5 MINUTE
GROUP BY path ORDER BY visitors DESC, path LIMIT 10""",
}


def catalog() -> dict[str, dict[str, object]]:
    """The baseline's `GET /dashboard/api/queries` answer: {name: {"sql": text, "params": [names]}}."""
    return {name: {"sql": sql.strip(), "params": parameters(sql)} for name, sql in QUERIES.items()}
