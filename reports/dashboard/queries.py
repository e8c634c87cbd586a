"""Every SQL query the dashboard page runs, in one place, each named by its panel.

The page (static/dashboard.js) fetches this list from `GET /dashboard/api/queries` and sends each
query's text unchanged to the query port (`POST /`, `FORMAT JSON`) with its values as query
parameters (`param_<name>`, ClickHouse's `{name:Type}`): no SQL is ever built from user input,
and the port's read-only guard and caps apply. The queries read `v_*` views and the `dashboard_*_days`
views of sql/0121_event_rollups.sql and sql/0122_visitor_bitmaps.sql (the day roll-ups with their
uniqExact states and visitor bitmaps: not `v_*`, as BI formats have no state type) and `visitor_numbers`
(0122); switching a panel to another view (e.g. a roll-up) is a change of this
file alone. docs/dashboards.md "The built-in dashboard" lists them.

Where the time goes (load/bench_dashboard.py, BENCHMARKS.md "Dashboard first render"):
  * Every panel but the funnel reads the day roll-ups for the COVERED days of the range (_covered: no
    filter on, and every session of the day started in the range: every inner day, and a boundary day
    whose sessions all lie inside, such as today for a range that ends now), and v_sessions / v_events
    for the rest (_raw: a boundary day with a session outside the range; every day once a filter is
    on, the roll-ups having no filter columns). Both are merged exactly (_Visitors: the roll-ups' visitor
    bitmaps with the raw rows' visitor numbers, or uniqExact states while a roll-up's bitmaps are being
    built): the same numbers as v_sessions / v_events alone. The page's ranges are whole UTC days, so
    with no filter on every day is covered. The `events` key (site_id, toDate(ts),
    …) skips the covered days, so a range of covered days reads no event (_RAW_EVENTS).
  * An event counts with its session: in the range when its session started in it, from the
    session's start day and the next (sql/0121_event_rollups.sql, reports/fold.py FACTS_SQL).
  * The funnel reads v_events of the range's sessions (windowFunnel needs the events), from `from` to
    the end of the day after `to`; the page asks for it after the other panels.
  * Live reads the last 5 minutes of the site only.

Parameters every filtered panel takes (strings are '' when the filter is off):
    site (String)            the site picker
    from_ms, to_ms (Int64)   the date range [from, to), epoch milliseconds UTC
    channel, utm_source, utm_medium, utm_campaign, utm_term, utm_content (String)
                             the session's first touch (v_sessions) / the lead's last touch (v_leads_last_touch)
    page (String)            landing page: v_sessions.entry_path / v_leads_last_touch.landing_path
    experiment, variant (String)
                             sessions (leads) that carried this (experiment, variant) pair
A session is in the range when it started in it; a lead when it occurred in it. Bots are left out.
Rates are fractions (0.15 = 15 %), durations seconds, revenue {currency: sum} (v_sessions.revenue).
"""

from __future__ import annotations

import re
from typing import Final

#: Filters of the page, in URL order: each is a query parameter of the page and of the queries.
FILTERS: Final = ("channel", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "page",
                  "experiment", "variant")
#: Source breakdowns (one table per dimension; leads per row by last touch).
SOURCE_DIMENSIONS: Final = ("channel", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
#: Most steps a funnel may have (the windowFunnel slots of sql/0110_dashboard_views.sql).
MAX_FUNNEL_STEPS: Final = 8


def _filters(landing: str) -> str:
    """The filter conditions on v_sessions (landing = entry_path) or v_leads_last_touch (landing = landing_path)."""
    parts = [f"({{{name}:String}} = '' OR {name} = {{{name}:String}})" for name in SOURCE_DIMENSIONS]
    parts.append(f"({{page:String}} = '' OR {landing} = {{page:String}})")
    parts.append("({experiment:String} = '' OR has(variants, ({experiment:String}, {variant:String})))")
    return " AND ".join(parts)


def _ms(name: str) -> str:
    return f"fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC')"


def _date(name: str) -> str:
    """The UTC day (Date) of epoch-ms parameter `name`."""
    return f"toDate(fromUnixTimestamp64Milli({{{name}:Int64}}, 'UTC'))"


#: No filter is on: only then can the day roll-ups (no filter columns) answer.
_NO_FILTER = "(" + " AND ".join(f"{{{name}:String}} = ''" for name in (*SOURCE_DIMENSIONS, "page", "experiment")) + ")"
#: Dimensions the channel roll-up (dashboard_channel_days) holds; utm_term and utm_content read v_sessions.
ROLLUP_DIMENSIONS: Final = ("channel", "utm_source", "utm_medium", "utm_campaign")


#: Sessions of the site in [lower, to) passing the filters (v_sessions).
def _sessions_where(lower: str = "from_ms") -> str:
    return (f"site_id = {{site:String}} AND is_bot = 0 AND started_at >= {_ms(lower)} AND started_at < {_ms('to_ms')}"
            f" AND {_filters('entry_path')}")


def _leads_where(lower: str = "from_ms") -> str:
    return (f"site_id = {{site:String}} AND occurred_at >= {_ms(lower)} AND occurred_at < {_ms('to_ms')}"
            f" AND {_filters('landing_path')}")


#: Site and time first (the `events` key: site_id, toDate(ts)), up to the end of the day after `to`'s
#: day (a session started before `to` has its events in its start day and the next: session_facts).
_EVENTS_RANGE = (f"site_id = {{site:String}} AND ts >= {_ms('from_ms')}"
                 f" AND ts < toDateTime64({_date('to_ms')} + 2, 3, 'UTC')")
#: A session's duration in ms (v_sessions.duration_s is this / 1000; traffic_daily.duration_ms its sum).
_DURATION_MS = "toUInt64(toUnixTimestamp64Milli(ended_at) - toUnixTimestamp64Milli(started_at))"


def _edges(lower: str, upper: str) -> str:
    """A scalar (first_whole, last_whole) for the range [lower, upper) (epoch-ms parameters): whether
    every human session of the site that started on the UTC day of `lower` (of `upper`) started inside
    the range. Such a day's roll-up rows are exactly the range's sessions of that day; a range ending
    now (the presets) has a whole last day whatever the time of day. Reads the sessions of the two days
    outside the range, and the partition min-max index of session_facts (on started_at) skips the
    parts without any: usually every part."""
    return (f"(SELECT (countIf(toDate(started_at) = {_date(lower)}) = 0,"
            f" countIf(toDate(started_at) = {_date(upper)}) = 0)"
            f" FROM v_sessions WHERE site_id = {{site:String}} AND is_bot = 0"
            f" AND toDate(started_at) IN ({_date(lower)}, {_date(upper)})"
            f" AND (started_at < {_ms(lower)} OR started_at >= {_ms(upper)}))")


#: The name each query gives _edges of a range in its WITH clause (_with): the range and the period before.
_EDGES = {("from_ms", "to_ms"): "edges", ("prev_from_ms", "from_ms"): "prev_edges"}


def _with(*ranges: tuple[str, str]) -> str:
    """The WITH items defining the _edges of `ranges` (ClickHouse passes WITH into every sub-query)."""
    return ", ".join(f"{_edges(lower, upper)} AS {_EDGES[(lower, upper)]}" for lower, upper in ranges)


_RANGE: Final = ("from_ms", "to_ms")
_PREVIOUS: Final = ("prev_from_ms", "from_ms")


def _partial(day: str, lower: str, upper: str) -> str:
    """`day` (a Date expression) is a boundary day of [lower, upper) with a session outside the range
    (the query defines the range's edges: _with)."""
    edges = _EDGES[(lower, upper)]
    return (f"(({day} = {_date(lower)} AND NOT tupleElement({edges}, 1))"
            f" OR ({day} = {_date(upper)} AND NOT tupleElement({edges}, 2)))")


def _covered(day: str, lower: str = "from_ms", upper: str = "to_ms") -> str:
    """The day roll-ups answer day `day` (a Date expression) of [lower, upper): no filter is on, the day
    is in the range and every session of it started in the range (_edges)."""
    return (f"({_NO_FILTER} AND {day} >= {_date(lower)} AND {day} <= {_date(upper)}"
            f" AND NOT {_partial(day, lower, upper)})")


def _raw(day: str, lower: str = "from_ms", upper: str = "to_ms") -> str:
    """Sessions started on `day` in [lower, upper) are read from v_sessions, not the roll-ups: every day
    when a filter is on, else the boundary days _covered leaves out (the complement of _covered)."""
    return f"(NOT {_NO_FILTER} OR {_partial(day, lower, upper)})"


#: The roll-ups whose visitors the dashboard reads as bitmaps (sql/0122_visitor_bitmaps.sql), from their
#: definition version 2 on (reports/fold.py VERSIONS): `catalog(bitmaps=True)` only when every one holds it.
BITMAP_TABLES: Final = ("traffic_daily", "channel_daily", "page_daily", "event_type_daily")
BITMAP_VERSION: Final = 2


class _Visitors:
    """How a panel counts visitors over the UNION of covered roll-up rows and raw rows, exactly.

    bitmaps: a covered row brings its visitors as a Roaring bitmap of visitor numbers (`b`); the raw rows
    look their visitors' numbers up in visitor_numbers and bring the numbered ones as a bitmap (`b`) and
    the count of the others (`u`, exact: uniqExact). Visitors = |union of the bitmaps| + sum of `u`: a
    visitor without a number is in no folded day, so in no covered row and counted once, in `u` (its raw
    rows are one row per output group). Else (a roll-up still at definition version 1, whose bitmaps are
    empty) uniqExact states (`v`) on both sides, merged. With a filter on, every row is raw and the look-up
    reads nothing (_NO_FILTER in its WHERE): every visitor counts in `u`.
    """

    def __init__(self, bitmaps: bool) -> None:
        self.bitmaps = bitmaps

    def covered(self) -> str:
        """The columns of a covered row (of a dashboard_*_days view)."""
        return "visitor_bitmap AS b, toUInt64(0) AS u" if self.bitmaps else "visitors AS v"

    def raw(self) -> str:
        """The aggregates of a raw branch (joined with `lookup`)."""
        return ("groupBitmapStateIf(visitor_n, visitor_n != 0) AS b, uniqExactIf(anonymous_id, visitor_n = 0) AS u"
                if self.bitmaps else "uniqExactState(anonymous_id) AS v")

    def lookup(self, ids: str) -> str:
        """The JOIN giving each raw row its visitor number `visitor_n` (0: none), for the visitor ids `ids`
        (a sub-query) only; nothing when counting with uniqExact states."""
        if not self.bitmaps:
            return ""
        return (f" LEFT JOIN (SELECT anonymous_id, n AS visitor_n FROM visitor_numbers WHERE site_id = {{site:String}}"
                f" AND {_NO_FILTER} AND anonymous_id IN ({ids})) AS numbered USING anonymous_id")

    def merge(self, condition: str = "") -> str:
        """The exact visitors of the merged rows (those where `condition` holds)."""
        if self.bitmaps:
            return (f"groupBitmapMergeIf(b, {condition}) + sumIf(u, {condition})" if condition
                    else "groupBitmapMerge(b) + sum(u)")
        return f"uniqExactMergeIf(v, {condition})" if condition else "uniqExactMerge(v)"


#: The sessions of the range the roll-ups do not answer (_raw), as (session_id, start day).
_RAW_SESSIONS = (f"(SELECT session_id, toDate(started_at) FROM v_sessions WHERE {_sessions_where()}"
                 f" AND {_raw('toDate(started_at)')})")
#: The events of those sessions: a session's events are those of its start day and the next (the cut of
#: session_facts, reports/fold.py FACTS_SQL; the day of an event is its session's start day,
#: sql/0121_event_rollups.sql). The day conditions first, so the `events` key (site_id, toDate(ts), …)
#: skips every day the roll-ups answer; with no filter on and whole days, no event is read.
_RAW_EVENTS = (f"{_EVENTS_RANGE}"
               f" AND (NOT {_NO_FILTER} OR {_partial('toDate(ts)', 'from_ms', 'to_ms')}"
               f" OR {_partial('toDate(ts) - 1', 'from_ms', 'to_ms')})"
               f" AND ((session_id, toDate(ts)) IN {_RAW_SESSIONS} OR (session_id, toDate(ts) - 1) IN {_RAW_SESSIONS})")


#: The raw sessions of the range (_raw), their visitors (the ids _Visitors.lookup numbers).
_RAW_SESSION_IDS = f"SELECT anonymous_id FROM v_sessions WHERE {_sessions_where()} AND {_raw('toDate(started_at)')}"


def _rollup_sessions(dimension: str, vis: _Visitors) -> str:
    """Sessions, visitors and revenue per `dimension` value (a dashboard_channel_days column) of the
    filtered sessions in [from, to): the roll-up's covered days and v_sessions for the rest."""
    return f"""
      SELECT key, sum(n) AS sessions, {vis.merge()} AS visitors, sumMap(rev) AS revenue
      FROM (SELECT {dimension} AS key, {vis.covered()}, sessions AS n, revenue AS rev FROM dashboard_channel_days
            WHERE site_id = {{site:String}} AND {_covered('day')}
            UNION ALL
            SELECT {dimension} AS key, {vis.raw()}, count() AS n, sumMap(revenue) AS rev
            FROM v_sessions{vis.lookup(_RAW_SESSION_IDS)}
            WHERE {_sessions_where()} AND {_raw('toDate(started_at)')}
            GROUP BY key)
      GROUP BY key"""


def _source_query(dimension: str, vis: _Visitors) -> str:
    sessions = (_rollup_sessions(dimension, vis) if dimension in ROLLUP_DIMENSIONS else f"""
      SELECT {dimension} AS key, count() AS sessions, uniqExact(anonymous_id) AS visitors, sumMap(revenue) AS revenue
      FROM v_sessions WHERE {_sessions_where()} GROUP BY key""")
    return f"""{f"WITH {_with(_RANGE)}" if dimension in ROLLUP_DIMENSIONS else ""}
SELECT key, s.sessions AS sessions, s.visitors AS visitors, l.leads AS leads,
       if(s.sessions = 0, 0, l.leads / s.sessions) AS conversion_rate, s.revenue AS revenue
FROM ({sessions}) AS s
FULL OUTER JOIN (SELECT {dimension} AS key, count() AS leads FROM v_leads_last_touch
                 WHERE {_leads_where()} GROUP BY key) AS l
USING key
ORDER BY sessions DESC, leads DESC, key
LIMIT 50"""


def _event_rollup(columns: str, rollup: str, raw: str, where: str = "", rollup_where: str = "") -> str:
    """The UNION of a day roll-up's rows (dashboard_<rollup>_days) for the covered days and of `raw` over
    the events the roll-ups do not answer (_RAW_EVENTS): `columns` names the output of both branches."""
    return f"""
      SELECT {columns} FROM dashboard_{rollup}_days
      WHERE site_id = {{site:String}} AND {_covered('day')}{rollup_where}
      UNION ALL
      {raw} AND {_RAW_EVENTS}{where}"""


def _event_visitors(key: str, rollup: str, selection: str, vis: _Visitors, rollup_where: str = "") -> str:
    """`key`, the count `n` and the visitors (_Visitors) of dashboard_<rollup>_days' covered rows and of
    the raw events of v_events passing `selection`, grouped by `key` (a column of both)."""
    ids = f"SELECT anonymous_id FROM v_events WHERE {selection} AND {_RAW_EVENTS}"
    count = "pageviews" if rollup == "page" else "events"
    return _event_rollup(f"{key}, {count} AS n, {vis.covered()}", rollup,
                         f"SELECT {key}, count() AS n, {vis.raw()} FROM v_events{vis.lookup(ids)} WHERE {selection}",
                         f" GROUP BY {key}", rollup_where)


#: A funnel on the filtered sessions' events: sql/0110_dashboard_views.sql's v_funnel with the
#: page's filters, per visitor (per_session = 0) or per session (1). Steps: '/path' = a page view
#: of that path, else an event type. Only events that may match a step are read into windowFunnel (a
#: unit without any has level 0, which no step counts), before the session sub-query is checked.
#: windowFunnel needs the events themselves, so the funnel reads v_events for every day: the events of
#: the range's filtered sessions from `from` to the end of the day after `to`'s day (one set look-up per
#: event; a session longer than its start day and the next keeps its later events here, unlike the
#: other panels, which cut it as session_facts does: a visit spanning two midnights).
_SESSION_IDS = f"session_id IN (SELECT session_id FROM v_sessions WHERE {_sessions_where()})"
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
        WHERE {_EVENTS_RANGE} AND ((type = 'page_view' AND has(steps, path)) OR has(steps, type)) AND {_SESSION_IDS}
        GROUP BY unit
    )
    GROUP BY step
)
WINDOW w AS (ORDER BY step ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
ORDER BY step"""


#: The sessions of the totals' two periods the roll-ups do not answer.
_TOTALS_RAW = (f"{_sessions_where('prev_from_ms')}"
               f" AND ((started_at < {_ms('from_ms')} AND {_raw('toDate(started_at)', 'prev_from_ms', 'from_ms')})"
               f" OR (started_at >= {_ms('from_ms')} AND {_raw('toDate(started_at)')}))")
#: The sessions of the traffic chart the roll-ups do not answer (every one for hour buckets).
_TRAFFIC_RAW = f"{_sessions_where()} AND ({{bucket_s:UInt32}} != 86400 OR {_raw('toDate(started_at)')})"


def queries_for(bitmaps: bool) -> dict[str, str]:
    """name -> SQL text, each returning what the panel of the same name shows; visitors from the roll-ups'
    bitmaps (`bitmaps`: every table of BITMAP_TABLES at BITMAP_VERSION or later) or uniqExact states."""
    vis = _Visitors(bitmaps)
    return {
    # The site picker: every site with human sessions; a site not listed has no events yet (the empty
    # state: "add this script tag").
    "sites": "SELECT site_id FROM v_daily_traffic GROUP BY site_id ORDER BY site_id",
    # Totals of [from, to) and of the period before it, [prev_from, from) (same length); *_change is
    # relative (x / previous - 1, NULL without a previous value) for counts and durations, and the
    # difference in rate (points as a fraction) for bounce_rate and conversion_rate.
    "totals": f"""
WITH
    {_with(_RANGE, _PREVIOUS)},
    (SELECT (countIf(occurred_at >= {_ms('from_ms')}), countIf(occurred_at < {_ms('from_ms')}))
     FROM v_leads_last_touch WHERE {_leads_where('prev_from_ms')}) AS lead_counts,
    tupleElement(lead_counts, 1) AS leads, tupleElement(lead_counts, 2) AS prev_leads
SELECT
    {vis.merge('cur')} AS visitors, {vis.merge('NOT cur')} AS prev_visitors,
    sumIf(n, cur) AS sessions, sumIf(n, NOT cur) AS prev_sessions,
    sumIf(views, cur) AS pageviews, sumIf(views, NOT cur) AS prev_pageviews,
    if(sessions = 0, NULL, sumIf(bounces, cur) / sessions) AS bounce_rate,
    if(prev_sessions = 0, NULL, sumIf(bounces, NOT cur) / prev_sessions) AS prev_bounce_rate,
    if(sessions = 0, NULL, sumIf(ms, cur) / 1000 / sessions) AS avg_duration_s,
    if(prev_sessions = 0, NULL, sumIf(ms, NOT cur) / 1000 / prev_sessions) AS prev_avg_duration_s,
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
FROM (SELECT {_covered('day')} AS cur, {vis.covered()}, sessions AS n, pageviews AS views, bounces, duration_ms AS ms
      FROM dashboard_traffic_days
      WHERE site_id = {{site:String}} AND ({_covered('day', 'prev_from_ms', 'from_ms')} OR {_covered('day')})
      UNION ALL
      SELECT started_at >= {_ms('from_ms')} AS cur, {vis.raw()}, count() AS n,
             sum(pageviews) AS views, sum(is_bounce) AS bounces, sum({_DURATION_MS}) AS ms
      FROM v_sessions{vis.lookup(f"SELECT anonymous_id FROM v_sessions WHERE {_TOTALS_RAW}")}
      WHERE {_TOTALS_RAW}
      GROUP BY cur)""",
    # Traffic over time: buckets of bucket_s seconds (3600 for ranges of 2 days or less, else 86400),
    # epoch seconds UTC at the bucket's start. Day buckets of whole days come from the roll-up.
    "traffic": f"""
WITH {_with(_RANGE)}
SELECT t, {vis.merge()} AS visitors, sum(n) AS sessions, sum(views) AS pageviews
FROM (SELECT toUnixTimestamp(toDateTime(day, 'UTC')) AS t, {vis.covered()}, sessions AS n, pageviews AS views
      FROM dashboard_traffic_days
      WHERE site_id = {{site:String}} AND {{bucket_s:UInt32}} = 86400 AND {_covered('day')}
      UNION ALL
      SELECT toUnixTimestamp(toStartOfInterval(started_at, toIntervalSecond({{bucket_s:UInt32}}))) AS t,
             {vis.raw()}, count() AS n, sum(pageviews) AS views
      FROM v_sessions{vis.lookup(f"SELECT anonymous_id FROM v_sessions WHERE {_TRAFFIC_RAW}")}
      WHERE {_TRAFFIC_RAW}
      GROUP BY t)
GROUP BY t ORDER BY t""",
    **{f"sources_{dimension}": _source_query(dimension, vis) for dimension in SOURCE_DIMENSIONS},
    # Top pages: page views of the filtered sessions per path (page_daily for the covered days).
    "pages_top": f"""
WITH {_with(_RANGE)}
SELECT path, sum(n) AS pageviews, {vis.merge()} AS visitors
FROM ({_event_visitors("path", "page", "type = 'page_view'", vis)})
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
    # Custom events: every type but page_view, with unique visitors (event_type_daily for the covered days).
    "events_types": f"""
WITH {_with(_RANGE)}
SELECT type, sum(n) AS events, {vis.merge()} AS visitors
FROM ({_event_visitors("type", "event_type", "type != 'page_view'", vis, " AND type != 'page_view'")})
GROUP BY type ORDER BY events DESC, type LIMIT 100""",
    # Property keys seen on those events (the breakdown's picker): events carrying the key (once per
    # event, even when its map repeats the key), from event_prop_daily for the covered days.
    "events_prop_keys": f"""
WITH {_with(_RANGE)}
SELECT key, sum(n) AS events
FROM ({_event_rollup("key, events AS n", "event_prop",
                     "SELECT arrayJoin(arrayDistinct(mapKeys(props))) AS key, count() AS n FROM v_events "
                     "WHERE type != 'page_view' AND notEmpty(props)", " GROUP BY key")})
GROUP BY key ORDER BY events DESC, key LIMIT 100""",
    # One property's values per event type (its first value when a map repeats the key).
    "events_props": f"""
WITH {_with(_RANGE)}
SELECT type, value, sum(n) AS events, uniqExactMerge(v) AS visitors
FROM ({_event_rollup("type, value, events AS n, visitors AS v", "event_prop",
                     "SELECT type, props[{prop_key:String}] AS value, count() AS n, uniqExactState(anonymous_id) AS v "
                     "FROM v_events WHERE type != 'page_view' AND mapContains(props, {prop_key:String})",
                     " GROUP BY type, value", " AND key = {prop_key:String}")})
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


#: name -> SQL text of the queries with visitors from the roll-ups' bitmaps (queries_for).
QUERIES: Final[dict[str, str]] = queries_for(True)
#: The same with uniqExact states: while a roll-up of BITMAP_TABLES is still at definition version 1.
QUERIES_V1: Final[dict[str, str]] = queries_for(False)

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):")


def parameters(sql: str) -> list[str]:
    """Names of the query parameters `{name:Type}` of `sql`, in order of first use."""
    return list(dict.fromkeys(_PARAM.findall(sql)))


def catalog(bitmaps: bool = True) -> dict[str, dict[str, object]]:
    """What `GET /dashboard/api/queries` serves: {name: {"sql": text, "params": [names]}} (QUERIES, or
    QUERIES_V1 without `bitmaps`)."""
    chosen = QUERIES if bitmaps else QUERIES_V1
    return {name: {"sql": sql.strip(), "params": parameters(sql)} for name, sql in chosen.items()}
