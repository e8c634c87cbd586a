"""Attribution at stitch time: the visitor's sessions and exposures -> first/last touch, landing, variants.

Rules, for one anonymous id, up to `occurred_at`:
- sessions are those of the visitor's non-bot events with ts <= occurred_at, grouped by the
  beacon's session_id, that started within the lookback window
  (`CLICKSTREAM_ATTRIBUTION_LOOKBACK_DAYS`); a session's touch is its earliest event's UTM,
  referrer host and channel and its landing page the earliest page view's path, in the order of
  events (ts, seq, spool_segment, spool_offset): the definitions of v_sessions (reports/fold.py
  FACTS_SQL, sql/README.md "Order of events");
- first touch: the earliest session with campaign information (channel != 'direct': a UTM or an
  external referrer), else the earliest session;
- last touch: the latest non-direct session (GA's "last non-direct click"), else the first touch;
- converting session: the request's session_id, else the latest session; its landing path is the
  lead's landing_path ('' when that session has no page view up to occurred_at);
- variants: per experiment, the variant of the visitor's earliest exposure at or before
  occurred_at, ties broken by variant id, read from `variant_exposures` (bots excluded there), the
  same assignment v_variant_lift makes, with no lookback (v_variant_lift has none either);
- site: the request's site_id, else the converting session's site, else the latest session's,
  else the configured default (`CLICKSTREAM_STITCH_DEFAULT_SITE`): a lead is never refused
  because telemetry is missing; it is recorded unattributed and `Attributed.missing` says why.
Sessions and exposures of other sites than the lead's are ignored.

Reads bind every value as a ClickHouse query parameter ({name:Type}).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from stitcher.request import StitchRequest

DAY_MS = 86_400_000
#: Sessions are grouped from events read from this long before the window start, so that a
#: session begun just before it is seen whole and then left out (a session rotates after 30 min
#: of inactivity, so one spanning a day is already exotic).
SESSION_SCAN_MARGIN_MS = DAY_MS
DIRECT = "direct"


@dataclasses.dataclass(frozen=True, slots=True)
class Touch:
    """A session's traffic source as frozen in lead_created (`ts_ms` None: no session at all)."""

    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_term: str = ""
    utm_content: str = ""
    referrer_host: str = ""
    channel: str = DIRECT
    landing_path: str = ""
    ts_ms: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """One session of the visitor up to occurred_at: site, id, first and last event (epoch ms), touch."""

    site_id: str
    session_id: str
    started_ms: int
    ended_ms: int
    touch: Touch


@dataclasses.dataclass(frozen=True, slots=True)
class Exposure:
    """The visitor's earliest exposure (epoch ms) to one variant of one experiment."""

    site_id: str
    experiment_id: str
    variant_id: str
    first_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class Attribution:
    """What lead_created freezes: site, converting session, landing path, touches, variants."""

    site_id: str
    session_id: str
    landing_path: str
    first_touch: Touch
    last_touch: Touch
    variants: dict[str, str]


def pick_site(sessions: Sequence[Session], site_id: str | None, session_id: str | None) -> str | None:
    """The lead's site: `site_id`, else the site of `session_id`'s session, else of the latest session.

    `sessions` are ordered by (started_ms, session_id). None when nothing says it.
    """
    if site_id is not None:
        return site_id
    if session_id is not None:
        named = [s for s in sessions if s.session_id == session_id]
        if named:
            return named[-1].site_id
    return sessions[-1].site_id if sessions else None


def resolve(
    sessions: Sequence[Session],
    exposures: Sequence[Exposure],
    *,
    site_id: str,
    session_id: str | None,
    occurred_at_ms: int,
) -> Attribution:
    """Apply the module's rules to already-fetched sessions and exposures (a pure function).

    `sessions`: the visitor's sessions in the lookback window up to occurred_at, any order.
    `exposures`: the visitor's earliest exposure per (site, experiment, variant), any time.
    """
    mine = sorted((s for s in sessions if s.site_id == site_id), key=lambda s: (s.started_ms, s.session_id))
    campaign = [s for s in mine if s.touch.channel != DIRECT]
    first = campaign[0].touch if campaign else mine[0].touch if mine else Touch()
    last = campaign[-1].touch if campaign else first
    if session_id is None:
        converting = mine[-1] if mine else None
    else:
        converting = next((s for s in mine if s.session_id == session_id), None)
    variants: dict[str, tuple[int, str]] = {}
    for e in exposures:
        if e.site_id != site_id or e.first_ms > occurred_at_ms:
            continue
        key = (e.first_ms, e.variant_id)
        if e.experiment_id not in variants or key < variants[e.experiment_id]:
            variants[e.experiment_id] = key
    return Attribution(
        site_id=site_id,
        session_id=session_id if session_id is not None else converting.session_id if converting else "",
        landing_path=converting.touch.landing_path if converting else "",
        first_touch=first,
        last_touch=last,
        variants={exp: variant for exp, (_, variant) in sorted(variants.items())},
    )


# -- reading ClickHouse ----------------------------------------------------------------------
# TRICKY: times go in and out as epoch ms (Int64) with explicit 'UTC': chDB reports the host's
# time zone as the server's, so DateTime64 values decoded to Python would depend on it.
SESSIONS_SQL = """
SELECT
    site_id,
    session_id,
    toUnixTimestamp64Milli(min(ts)) AS started_ms,
    toUnixTimestamp64Milli(max(ts)) AS ended_ms,
    argMin((utm_source, utm_medium, utm_campaign, utm_term, utm_content, referrer_host, channel),
           (ts, seq, spool_segment, spool_offset)) AS touch,
    argMinIf(path, (ts, seq, spool_segment, spool_offset), type = 'page_view') AS landing_path
FROM events
WHERE anonymous_id = {anonymous_id:String}
  AND is_bot = 0
  AND ts >= fromUnixTimestamp64Milli({scan_from_ms:Int64}, 'UTC')
  AND ts <= fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')
GROUP BY site_id, session_id
HAVING started_ms >= {since_ms:Int64}
ORDER BY started_ms, session_id
"""

# variant_exposures is an AggregatingMergeTree: rows of unmerged parts are merged here with min().
EXPOSURES_SQL = """
SELECT site_id, experiment_id, variant_id, toUnixTimestamp64Milli(min(first_exposed_at)) AS first_ms
FROM variant_exposures
WHERE anonymous_id = {anonymous_id:String}
GROUP BY site_id, experiment_id, variant_id
HAVING first_ms <= {until_ms:Int64}
ORDER BY site_id, experiment_id, first_ms, variant_id
"""


def fetch_sessions(client: Client, anonymous_id: str, *, until_ms: int, since_ms: int) -> list[Session]:
    """The visitor's sessions (every site) started at or after `since_ms`, from their events at or
    before `until_ms` (epoch ms); ordered by (started_ms, session_id). Raises ClickHouseError."""
    rows: Sequence[Sequence[Any]] = client.query(SESSIONS_SQL, parameters={
        "anonymous_id": anonymous_id, "until_ms": until_ms, "since_ms": since_ms,
        "scan_from_ms": since_ms - SESSION_SCAN_MARGIN_MS,
    }).result_rows
    sessions = []
    for site_id, session_id, started_ms, ended_ms, touch, landing_path in rows:
        source, medium, campaign, term, content, referrer_host, channel = touch
        sessions.append(Session(str(site_id), str(session_id), int(started_ms), int(ended_ms), Touch(
            str(source), str(medium), str(campaign), str(term), str(content), str(referrer_host), str(channel),
            str(landing_path), int(started_ms),
        )))
    return sessions


def fetch_exposures(client: Client, anonymous_id: str, *, until_ms: int) -> list[Exposure]:
    """The visitor's earliest exposure per (site, experiment, variant) at or before `until_ms`.
    Raises ClickHouseError."""
    rows: Sequence[Sequence[Any]] = client.query(
        EXPOSURES_SQL, parameters={"anonymous_id": anonymous_id, "until_ms": until_ms}
    ).result_rows
    return [Exposure(str(s), str(e), str(v), int(ms)) for s, e, v, ms in rows]


class Missing(enum.StrEnum):
    """Why a lead is recorded without (part of) its attribution (`clickstream_stitcher_unattributed`)."""

    NO_VISITOR_DATA = "no_visitor_data"  # no session of the visitor on the lead's site in the window
    SESSION_NOT_SEEN = "session_not_seen"  # the request's session_id has no event (yet)
    PAGE_VIEW_NOT_SEEN = "page_view_not_seen"  # the converting session has events but no page view (yet)


@dataclasses.dataclass(frozen=True, slots=True)
class Attributed:
    """The outcome of `attribute`: the attribution, occurred_at (epoch ms), and what was missing
    (None when the visitor's telemetry, and the named session if any, were found)."""

    attribution: Attribution
    occurred_at_ms: int
    missing: Missing | None


def missing_telemetry(sessions: Sequence[Session], site_id: str, session_id: str | None) -> Missing | None:
    """What of the visitor's telemetry is missing for a lead of `site_id` (None: nothing).

    The converting session (the named one, else the latest, as `resolve` picks it) must have a page
    view: its landing page. A beacon sends some events on their own (an exposure, a click) ahead of
    the batch holding the page view, so a session can be seen before its landing page is.
    """
    mine = sorted((s for s in sessions if s.site_id == site_id), key=lambda s: (s.started_ms, s.session_id))
    if not mine:
        return Missing.NO_VISITOR_DATA
    converting = mine[-1] if session_id is None else next((s for s in mine if s.session_id == session_id), None)
    if converting is None:
        return Missing.SESSION_NOT_SEEN
    if not converting.touch.landing_path:
        return Missing.PAGE_VIEW_NOT_SEEN
    return None


def attribute(
    client: Client, request: StitchRequest, *, now_ms: int, lookback_days: int, max_skew_ms: int,
    default_site: str,
) -> Attributed:
    """Read the visitor's history and resolve the attribution, with occurred_at (epoch ms).

    The site is `pick_site`'s, else `default_site` (the lead is then unattributed,
    `missing` = NO_VISITOR_DATA).
    TRICKY: without an `occurred_at` in the request, "now" is the stitcher's clock but event `ts`
    is the browser's, which may run ahead by up to the collector's allowed skew
    (CLICKSTREAM_MAX_CLOCK_SKEW_S). So every event accepted so far counts (ts up to now + skew),
    and occurred_at is now, or the visitor's latest counted event if later: a conversion never
    precedes the events it is attributed to, and v_variant_lift (lead at or after the first
    exposure) counts the visitor as a converter of the frozen variant.
    Raises ClickHouseError.
    """
    explicit = request.occurred_at_ms
    base_ms = now_ms if explicit is None else explicit
    until_ms = now_ms + max_skew_ms if explicit is None else explicit
    sessions = fetch_sessions(client, request.anonymous_id, until_ms=until_ms,
                              since_ms=base_ms - lookback_days * DAY_MS)
    site_id = pick_site(sessions, request.site_id, request.session_id) or default_site
    exposures = fetch_exposures(client, request.anonymous_id, until_ms=until_ms)
    occurred_ms = base_ms
    if explicit is None:
        seen = [s.ended_ms for s in sessions if s.site_id == site_id]
        seen += [e.first_ms for e in exposures if e.site_id == site_id]
        occurred_ms = max([now_ms, *seen])
    attribution = resolve(sessions, exposures, site_id=site_id, session_id=request.session_id,
                          occurred_at_ms=occurred_ms)
    return Attributed(attribution, occurred_ms, missing_telemetry(sessions, site_id, request.session_id))
