"""Deterministic traffic model (by seed) and its ground truth, computed without the pipeline.

Visitors come back in several sessions over the last days through known channels (direct,
organic search, paid search, email, organic and paid social, referral), bounce or browse (page
views, SPA page views, clicks, custom events), take part in two concurrent experiments with a
configurable true effect, and some convert (a stitch call). A fraction are bots and a fraction
of events are invalid. The model knows what it generated (each session's channel, landing page,
bounce, each visitor's variant), so `Truth` says what every view must show without using any
code of the pipeline (no ClickHouse, no channel rules of the pipeline): an independent computation.

Units: timestamps are epoch milliseconds (UTC). Sessions lie in
[now - span_hours, now - 15 minutes], inside the collector's 72 h clock policy.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

HUMAN_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Mobile Safari/537.36",
)
BOT_AGENTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
)

#: channel -> (weight, utm or None, referrer URL); the channel is what the pipeline must derive.
CHANNELS: dict[str, tuple[float, dict[str, str] | None, str]] = {
    "direct": (0.25, None, ""),
    "organic_search": (0.20, None, "https://www.google.com/search?q=pricing"),
    "paid_search": (0.15, {"source": "google", "medium": "cpc", "campaign": "spring_sale", "term": "crm"},
                    "https://www.google.com/"),
    "email": (0.12, {"source": "newsletter", "medium": "email", "campaign": "weekly_42"}, ""),
    "organic_social": (0.10, None, "https://l.facebook.com/"),
    "paid_social": (0.06, {"source": "facebook", "medium": "paid_social", "campaign": "retarget"},
                    "https://l.facebook.com/"),
    "referral": (0.12, None, "https://blog.partner.example/review"),
}
REFERRER_HOST = {
    "": "", "https://www.google.com/search?q=pricing": "google.com", "https://www.google.com/": "google.com",
    "https://l.facebook.com/": "l.facebook.com", "https://blog.partner.example/review": "blog.partner.example",
}
#: Events beacon.js sends without the visitor doing anything: they do not make a session engaged.
PASSIVE_EVENTS = ("engagement", "web_vitals", "not_found")
#: engaged_ms of generated engagement reports: the 10 s engaged-session threshold on both sides.
ENGAGED_MS = (0, 1_000, 4_000, 10_000, 10_001, 25_000, 60_000)
#: (revenue as sent, currency): a purchase's props; "n/a" is not a number and carries no revenue.
PURCHASES = ((19.99, "EUR"), (49.9, "EUR"), (120, "USD"), (0.5, "USD"), ("n/a", "EUR"))
LANDING_PATHS = ("/", "/pricing", "/features", "/blog/launch")
INNER_PATHS = ("/pricing", "/features", "/docs", "/about", "/signup")
UTM_KEYS = ("source", "medium", "campaign", "term", "content")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Knobs of the traffic model; `experiments` maps experiment -> {variant: conversion probability}."""

    seed: int = 1
    visitors: int = 500
    site_id: str = "shop.example"
    now_ms: int = 0  # 0: now
    span_hours: float = 60.0
    bot_fraction: float = 0.04
    invalid_fraction: float = 0.01
    max_sessions: int = 4
    hero_participation: float = 0.9
    pricing_participation: float = 0.5
    experiments: dict[str, dict[str, float]] = dataclasses.field(default_factory=lambda: {
        "hero": {"control": 0.10, "B": 0.16},
        "pricing": {"control": 0.12, "annual": 0.12},
    })


@dataclasses.dataclass
class Session:
    session_id: str
    anonymous_id: str
    channel: str
    utm: dict[str, str]
    referrer_host: str
    landing_path: str
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    is_bot: bool = False

    @property
    def started_at(self) -> int:
        return min(int(e["ts"]) for e in self.events)


@dataclasses.dataclass
class Lead:
    """A conversion as the application's hook would report it (the /stitch body)."""

    lead_id: str
    anonymous_id: str
    session_id: str
    occurred_at_ms: int
    site_id: str

    def body(self) -> dict[str, Any]:
        return {"lead_id": self.lead_id, "anonymous_id": self.anonymous_id, "session_id": self.session_id,
                "occurred_at": iso(self.occurred_at_ms), "site_id": self.site_id}


@dataclasses.dataclass
class Traffic:
    """What the model generated: valid events (with the User-Agent to send them with), invalid
    events, conversions, and the sessions and exposures behind them."""

    config: ModelConfig
    events: list[tuple[dict[str, Any], str]]
    invalid: list[tuple[dict[str, Any], str]]
    leads: list[Lead]
    sessions: dict[str, Session]
    exposures: dict[tuple[str, str], tuple[str, int]]  # (anonymous_id, experiment) -> (variant, first ts)


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def generate(config: ModelConfig) -> Traffic:
    """Generate traffic for `config`; the same config gives the same events, ids and leads."""
    rng = random.Random(config.seed)
    now = config.now_ms or int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    site = config.site_id
    start = now - int(config.span_hours * 3_600_000)
    end = now - 30 * 60_000  # + at most ~15 min of a last session: never ahead of the collector's clock
    sessions: dict[str, Session] = {}
    events: list[tuple[dict[str, Any], str]] = []
    invalid: list[tuple[dict[str, Any], str]] = []
    leads: list[Lead] = []
    exposures: dict[tuple[str, str], tuple[str, int]] = {}

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    channel_weights = {name: spec[0] for name, spec in CHANNELS.items()}
    for v in range(config.visitors):
        anon = f"v{config.seed}-{v:06d}"
        is_bot = rng.random() < config.bot_fraction
        agent = rng.choice(BOT_AGENTS if is_bot else HUMAN_AGENTS)
        variants: dict[str, str] = {}
        planned: dict[str, str] = {}
        if rng.random() < config.hero_participation:
            planned["hero"] = rng.choice(sorted(config.experiments["hero"]))
        if rng.random() < config.pricing_participation:
            planned["pricing"] = rng.choice(sorted(config.experiments["pricing"]))
        n_sessions = rng.randint(1, config.max_sessions)
        t = rng.randint(start, end - 3_600_000 * n_sessions)
        converted = False
        for s in range(n_sessions):
            channel = _pick(rng, channel_weights)
            _, utm_spec, referrer = CHANNELS[channel]
            utm = dict(utm_spec or {})
            landing = rng.choice(LANDING_PATHS)
            sid = f"{anon}-s{s}"
            session = Session(sid, anon, channel, utm, REFERRER_HOST[referrer], landing, is_bot=is_bot)
            sessions[sid] = session
            bounce = rng.random() < 0.35
            n_pages = 1 if bounce else rng.randint(2, 6)
            query = "&".join(f"utm_{k}={utm[k]}" for k in UTM_KEYS if k in utm)
            path = landing
            for p in range(n_pages):
                t += rng.randint(1_000, 90_000)
                url = f"https://{site}{path}" + (f"?{query}" if query and p == 0 else "")
                event: dict[str, Any] = {
                    "type": "page_view", "site_id": site, "anonymous_id": anon, "session_id": sid, "ts": t,
                    "url": url, "event_id": uid(), "title": f"Page {path}", "screen": {"w": 1280, "h": 800},
                    "lang": "en-US",
                }
                if p == 0 and referrer:
                    event["referrer"] = referrer
                elif p > 0:
                    event["referrer"] = f"https://{site}/"
                if utm and (p > 0 or rng.random() < 0.5):
                    event["utm"] = dict(utm)  # the beacon sends the session's UTM with every event
                if variants:
                    event["variants"] = dict(variants)
                session.events.append(event)
                if not is_bot and p == 0 and rng.random() < 0.3:
                    t += rng.randint(100, 3_000)
                    session.events.append(_report(event, "web_vitals", t, uid(), {"lcp": 1200, "cls": 0.02},
                                                        variants))
                if not bounce:
                    # exposure on this page, as beacon.js sends it (a custom event carrying variants)
                    for exp, var in planned.items():
                        if exp not in variants and rng.random() < 0.6:
                            variants[exp] = var
                            t += rng.randint(10, 500)
                            session.events.append({
                                "type": "exposure", "site_id": site, "anonymous_id": anon, "session_id": sid,
                                "ts": t, "url": url, "event_id": uid(), "variants": dict(variants),
                                "props": {"experiment": exp, "variant": var},
                            })
                            if not is_bot:
                                exposures.setdefault((anon, exp), (var, t))
                    if rng.random() < 0.4:
                        t += rng.randint(500, 20_000)
                        session.events.append({
                            "type": "click", "site_id": site, "anonymous_id": anon, "session_id": sid, "ts": t,
                            "url": url, "event_id": uid(), "props": {"href": "https://docs.partner.example/"},
                            **({"variants": dict(variants)} if variants else {}),
                        })
                    if rng.random() < 0.2:
                        t += rng.randint(500, 20_000)
                        session.events.append({
                            "type": "cta_click", "site_id": site, "anonymous_id": anon, "session_id": sid, "ts": t,
                            "url": url, "event_id": uid(), "props": {"plan": rng.choice(["basic", "pro"]), "qty": 1},
                            **({"variants": dict(variants)} if variants else {}),
                        })
                if not bounce and p == n_pages - 1 and not is_bot and rng.random() < 0.15:
                    revenue, currency = rng.choice(PURCHASES)
                    t += rng.randint(500, 20_000)
                    session.events.append(_report(event, "purchase", t, uid(),
                                                  {"revenue": revenue, "currency": currency}, variants))
                # engagement reports of the page: none, one, or two (the tab was hidden and shown again)
                for _ in range(0 if is_bot else rng.choice((0, 1, 1, 1, 2))):
                    t += rng.randint(1_000, 30_000)
                    report = {"engaged_ms": rng.choice(ENGAGED_MS), "scroll_depth": rng.randint(5, 100)}
                    session.events.append(_report(event, "engagement", t, uid(), report, variants))
                path = rng.choice(INNER_PATHS)
            for seq, event in enumerate(session.events):
                event["seq"] = seq  # beacon.js's per-session counter (schemas/event.schema.json `seq`)
                events.append((event, agent))
            if not is_bot and not converted and variants.get("hero") is not None:
                p_conv = config.experiments["hero"][variants["hero"]]
                if "pricing" in variants:
                    pricing = config.experiments["pricing"]
                    p_conv *= pricing[variants["pricing"]] / pricing["control"]
                if rng.random() < p_conv:
                    converted = True
                    t += rng.randint(1_000, 30_000)
                    leads.append(Lead(f"lead-{anon}", anon, sid, t, site))
            t += rng.randint(40 * 60_000, 20 * 3_600_000)  # next visit after > 30 min of inactivity
            if t > end:
                break  # time only moves forward: no room left for another visit
        if rng.random() < config.invalid_fraction * 10:
            bad = {"type": "Page View", "site_id": site, "anonymous_id": anon, "session_id": f"{anon}-bad",
                   "ts": t, "url": f"https://{site}/", "event_id": uid()}
            invalid.append((bad, "/type"))
    events.sort(key=lambda pair: pair[0]["ts"])
    return Traffic(config, events, invalid, leads, sessions, exposures)


class Truth:
    """What every view must say for a `Traffic`, computed from the model's own knowledge."""

    def __init__(self, traffic: Traffic, lookback_days: int = 90) -> None:
        self.traffic = traffic
        self.site = traffic.config.site_id
        self.lookback_ms = lookback_days * 86_400_000

    def sessions(self) -> dict[str, dict[str, Any]]:
        """session_id -> the v_sessions row (bots included, flagged)."""
        out = {}
        for sid, s in self.traffic.sessions.items():
            ordered = sorted(s.events, key=event_order)
            views = [e for e in ordered if e["type"] == "page_view"]
            reports = [e["props"] for e in ordered if e["type"] == "engagement"]
            engaged_ms = sum(min(int(r["engaged_ms"]), 86_400_000) for r in reports)
            interactions = len(ordered) - len(views) - sum(e["type"] in PASSIVE_EVENTS for e in ordered)
            is_engaged = len(views) >= 2 or interactions > 0 or engaged_ms > 10_000  # GA4's engaged session
            first, last = ordered[0]["ts"], ordered[-1]["ts"]
            out[sid] = {
                "site_id": self.site, "session_id": sid, "anonymous_id": s.anonymous_id,
                "started_at": first, "ended_at": last, "duration_s": (last - first) / 1000,
                "pageviews": len(views), "events": len(ordered),
                "entry_path": _path(views[0]["url"]), "exit_path": _path(views[-1]["url"]),
                "utm_source": s.utm.get("source", ""), "utm_medium": s.utm.get("medium", ""),
                "utm_campaign": s.utm.get("campaign", ""), "referrer_host": s.referrer_host,
                "channel": s.channel, "is_bot": int(s.is_bot),
                "engaged_ms": engaged_ms, "max_scroll_depth": max((min(int(r["scroll_depth"]), 100) for r in reports),
                                                                  default=0),
                "is_engaged": int(is_engaged), "is_bounce": int(len(views) == 1 and not is_engaged),
            }
        return out

    def human_sessions(self) -> list[dict[str, Any]]:
        return [s for s in self.sessions().values() if not s["is_bot"]]

    def daily_traffic(self) -> dict[str, dict[str, Any]]:
        """ISO day -> visitors, sessions, pageviews, bounce_rate, avg_duration_s (UTC day of start)."""
        by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in self.human_sessions():
            by_day[dt.datetime.fromtimestamp(s["started_at"] / 1000, dt.UTC).date().isoformat()].append(s)
        return {
            day: {
                "visitors": len({s["anonymous_id"] for s in rows}), "sessions": len(rows),
                "pageviews": sum(s["pageviews"] for s in rows),
                "bounce_rate": sum(s["is_bounce"] for s in rows) / len(rows),
                "avg_duration_s": sum(s["duration_s"] for s in rows) / len(rows),
                "engaged_sessions": sum(s["is_engaged"] for s in rows),
                "engagement_rate": sum(s["is_engaged"] for s in rows) / len(rows),
                "avg_engaged_s": sum(s["engaged_ms"] for s in rows) / len(rows) / 1000,
            }
            for day, rows in by_day.items()
        }

    def lead_attribution(self, lead: Lead) -> dict[str, Any]:
        """The frozen fields of a lead: landing_path of its session, first and last touch (channel + UTM)."""
        sessions = sorted(
            (s for s in self.traffic.sessions.values()
             if s.anonymous_id == lead.anonymous_id and lead.occurred_at_ms - self.lookback_ms
             <= s.started_at <= lead.occurred_at_ms),
            key=lambda s: (s.started_at, s.session_id),
        )
        campaign = [s for s in sessions if s.channel != "direct"]
        first = campaign[0] if campaign else sessions[0]
        last = campaign[-1] if campaign else first
        converting = self.traffic.sessions[lead.session_id]
        variants = {exp: var for (anon, exp), (var, ts) in self.traffic.exposures.items()
                    if anon == lead.anonymous_id and ts <= lead.occurred_at_ms}
        return {"landing_path": converting.landing_path, "first_touch": _touch(first), "last_touch": _touch(last),
                "variants": variants}

    def landing_pages(self) -> dict[str, dict[str, Any]]:
        """landing path -> sessions, visitors, leads (frozen landing page), engaged sessions and rate."""
        leads = [self.lead_attribution(lead)["landing_path"] for lead in self.traffic.leads]
        return _by_session_key(self.human_sessions(), lambda s: s["entry_path"], leads)

    def channels(self) -> dict[tuple[str, str, str, str], dict[str, Any]]:
        """(channel, utm_source, utm_medium, utm_campaign) -> sessions, visitors, leads (last touch),
        engaged sessions and rate."""
        touches = [self.lead_attribution(lead)["last_touch"] for lead in self.traffic.leads]
        return _by_session_key(self.human_sessions(), _channel_key,
                               [(t["channel"], t["utm_source"], t["utm_medium"], t["utm_campaign"]) for t in touches])

    def revenue(self) -> dict[str, dict[str, Decimal]]:
        """session_id -> {currency: the sum of its purchases' revenue} (sessions with revenue only),
        bots included: what v_sessions.revenue holds."""
        out: dict[str, dict[str, Decimal]] = {}
        for sid, s in self.traffic.sessions.items():
            for e in s.events:
                props = e.get("props") or {}
                if "revenue" in props and isinstance(props["revenue"], int | float):
                    by_currency = out.setdefault(sid, {})
                    currency = str(props.get("currency", "")).upper()
                    by_currency[currency] = by_currency.get(currency, Decimal(0)) + Decimal(str(props["revenue"]))
        return out

    def revenue_by(self, key: Callable[[dict[str, Any]], Any]) -> dict[Any, dict[str, Decimal]]:
        """key(v_sessions row) -> {currency: revenue} over human sessions (v_landing_pages: entry_path,
        v_channels: channel and UTM)."""
        per_session = self.revenue()
        out: dict[Any, dict[str, Decimal]] = {}
        for s in self.human_sessions():
            for currency, amount in per_session.get(s["session_id"], {}).items():
                row = out.setdefault(key(s), {})
                row[currency] = row.get(currency, Decimal(0)) + amount
        return out

    def variant_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        """(experiment, variant) -> visitors (first-exposure variant) and converters (lead at/after it)."""
        last_lead: dict[str, int] = {}
        for lead in self.traffic.leads:
            last_lead[lead.anonymous_id] = max(last_lead.get(lead.anonymous_id, 0), lead.occurred_at_ms)
        out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"visitors": 0, "converters": 0})
        for (anon, exp), (var, first_ts) in self.traffic.exposures.items():
            out[(exp, var)]["visitors"] += 1
            if last_lead.get(anon, 0) >= first_ts:
                out[(exp, var)]["converters"] += 1
        return dict(out)


def event_order(event: dict[str, Any]) -> tuple[int, int]:
    """The order of events (sql/README.md "Order of events") as far as the model knows it: ts, then the
    client's seq. Arrival order, the last tie-break, is the order of `Traffic.events` (a stable sort
    keeps it); the model never gives two events of a session the same (ts, seq)."""
    return int(event["ts"]), int(event.get("seq", 0))


def _report(view: dict[str, Any], type_: str, ts: int, event_id: str, props: dict[str, Any],
            variants: dict[str, str]) -> dict[str, Any]:
    """An event beacon.js sends on the page of `view`: its URL, ids and campaign, the variants now."""
    event = {"type": type_, "site_id": view["site_id"], "anonymous_id": view["anonymous_id"],
             "session_id": view["session_id"], "ts": ts, "url": view["url"], "event_id": event_id, "props": props}
    if "utm" in view:
        event["utm"] = dict(view["utm"])
    if variants:
        event["variants"] = dict(variants)
    return event


def _channel_key(s: dict[str, Any]) -> tuple[str, str, str, str]:
    return s["channel"], s["utm_source"], s["utm_medium"], s["utm_campaign"]


def _by_session_key(sessions: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any],
                    lead_keys: list[Any]) -> dict[Any, dict[str, Any]]:
    """Sessions, visitors and engaged sessions per key, with the leads counted at `lead_keys`."""
    out: dict[Any, dict[str, Any]] = defaultdict(
        lambda: {"sessions": 0, "visitors": set(), "leads": 0, "engaged_sessions": 0})
    for s in sessions:
        row = out[key(s)]
        row["sessions"] += 1
        row["visitors"].add(s["anonymous_id"])
        row["engaged_sessions"] += s["is_engaged"]
    for lead_key in lead_keys:
        out[lead_key]["leads"] += 1
    return {k: {"sessions": v["sessions"], "visitors": len(v["visitors"]), "leads": v["leads"],
                "engaged_sessions": v["engaged_sessions"],
                "engagement_rate": v["engaged_sessions"] / v["sessions"] if v["sessions"] else None}
            for k, v in out.items()}


def _path(url: str) -> str:
    rest = url.split("://", 1)[1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path.split("?", 1)[0].split("#", 1)[0]


def _touch(s: Session) -> dict[str, Any]:
    return {"channel": s.channel, "utm_source": s.utm.get("source", ""), "utm_medium": s.utm.get("medium", ""),
            "utm_campaign": s.utm.get("campaign", ""), "utm_term": s.utm.get("term", ""),
            "utm_content": s.utm.get("content", ""), "referrer_host": s.referrer_host,
            "landing_path": s.landing_path, "ts": s.started_at}
