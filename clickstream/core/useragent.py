"""User-Agent fields of an event: browser, OS, device type and bot flag, memoised per User-Agent.

ClickHouse has no function for these, so Python computes them once per distinct User-Agent:
- browser / os / device_type: ua-parser (uap-core regexes); bot: crawlerdetect, or ua-parser's
  "Spider" device, or an empty User-Agent.
- a parse costs ~170 µs, a memo hit ~0.1 µs, and real traffic repeats a few thousand strings.

The collector stamps them on every spool row (one look-up per request: every event of a request
has the request's User-Agent), so the flusher hands rows to ClickHouse without touching them
(clickstream.core.spool "Block records"); the flusher keeps using them for spools written by the
previous version (flusher.legacy). Where this costs least was measured: BENCHMARKS.md "Collector".
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import orjson
from crawlerdetect import CrawlerDetect
from ua_parser import parse as parse_ua

_crawler = CrawlerDetect()

#: Distinct User-Agents memoised (per process); ~1 KiB each at most.
MEMO_SIZE = 20_000


class Agent(NamedTuple):
    """The columns of `events_ingest` derived from the User-Agent (sql/0007_ingest.sql)."""

    browser: str
    browser_version: str
    os: str
    os_version: str
    device_type: str
    is_bot: int


def _version(*parts: str | None) -> str:
    return ".".join(p for p in parts if p)


@lru_cache(maxsize=MEMO_SIZE)
def agent(user_agent: str) -> Agent:
    """Browser, OS, device type (desktop / mobile / tablet / bot) and bot flag of a User-Agent."""
    if not user_agent.strip():
        return Agent("", "", "", "", "bot", 1)
    result = parse_ua(user_agent)
    ua, os_, device = result.user_agent, result.os, result.device
    device_family = device.family if device else ""
    is_bot = int(device_family == "Spider" or bool(_crawler.isCrawler(user_agent)))
    lowered = user_agent.lower()
    if is_bot:
        device_type = "bot"
    elif "ipad" in lowered or "tablet" in lowered or ("android" in lowered and "mobile" not in lowered):
        device_type = "tablet"
    elif "mobi" in lowered or "iphone" in lowered or "android" in lowered:
        device_type = "mobile"
    else:
        device_type = "desktop"
    return Agent(
        ua.family if ua else "Other",
        _version(ua.major, ua.minor) if ua else "",
        os_.family if os_ else "Other",
        _version(os_.major, os_.minor) if os_ else "",
        device_type,
        is_bot,
    )


@lru_cache(maxsize=MEMO_SIZE)
def agent_fragment(user_agent: str) -> bytes:
    """`"user_agent":"…","browser":"…",…,"is_bot":0`: the User-Agent and its fields as the inside of
    a JSON object (no braces, no leading comma), memoised: what the collector appends to each row."""
    fields = orjson.dumps({"user_agent": user_agent, **agent(user_agent)._asdict()})
    return fields[1:-1]
