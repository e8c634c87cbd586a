"""Referrer + UTM -> marketing channel, after GA4's default channel group (simplified).

Source: Google Analytics 4 "[GA4] Default channel group" rules, evaluated in this order:
1. `direct`          no UTM source/medium and no external referrer;
2. `paid_search`     paid medium (cpc, ppc, paid*, retargeting) and a search source;
3. `paid_social`     paid medium and a social source;
4. `display`         medium display, banner, expandable, interstitial, cpm;
5. `organic_search`  a search source (UTM or referrer host) or medium `organic`;
6. `organic_social`  a social source, or medium social / social-network / social-media / sm;
7. `email`           source or medium email / e-mail / e_mail / newsletter;
8. `affiliates`      medium affiliate;
9. `paid_other`      any other paid medium;
10. `referral`       medium referral, or no UTM and an external referrer;
11. `unassigned`     UTM present but matching nothing above.
Sources are matched on the host's registrable label (google.com, google.co.uk -> "google").
The same rules run inside ClickHouse (sql/0007_ingest.sql, `clickstream_channel`); this module is
the readable reference, and tests/integration/test_channel.py checks both agree on generated input.
"""

from __future__ import annotations

import re
from functools import lru_cache

SEARCH_ENGINES = frozenset({
    "google", "bing", "yahoo", "duckduckgo", "baidu", "yandex", "ecosia", "naver", "ask", "aol",
    "startpage", "qwant", "seznam", "sogou", "so", "brave", "search", "kagi", "perplexity",
})
SOCIAL_NETWORKS = frozenset({
    "facebook", "fb", "instagram", "linkedin", "lnkd", "twitter", "t", "x", "reddit", "pinterest",
    "youtube", "tiktok", "snapchat", "threads", "mastodon", "whatsapp", "telegram", "tumblr", "vk",
    "quora", "discord", "bsky", "weibo", "xing", "medium",
})
_PAID = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
_DISPLAY = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
_SOCIAL_MEDIUM = frozenset({"social", "social-network", "social-media", "sm", "social network", "social media"})
_EMAIL = re.compile(r"^(email|e-mail|e_mail|e mail|newsletter)$")
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "gov", "ac", "edu", "ne", "or"})

CHANNELS = (
    "direct", "paid_search", "paid_social", "display", "organic_search", "organic_social", "email",
    "affiliates", "paid_other", "referral", "unassigned",
)


def site_label(host: str) -> str:
    """The registrable label of a host: 'www.google.co.uk' -> 'google', 'l.facebook.com' -> 'facebook',
    'search.brave.com' -> 'brave', 't.co' -> 't'."""
    parts = [p for p in host.strip(" ").lower().split(".") if p]
    if len(parts) >= 3 and parts[-2] in _SECOND_LEVEL and len(parts[-1]) == 2:
        parts = parts[:-2]
    elif len(parts) >= 2:
        parts = parts[:-1]
    return parts[-1] if parts else ""


def _source_label(source: str) -> str:
    source = source.strip(" ").lower()
    return site_label(source) if "." in source else source


@lru_cache(maxsize=65536)
def classify(utm_source: str, utm_medium: str, referrer_host: str) -> str:
    """The channel of a touch. `referrer_host` must already be empty for internal referrers."""
    source = _source_label(utm_source) if utm_source else site_label(referrer_host) if referrer_host else ""
    medium = utm_medium.strip(" ").lower()
    if not utm_source and not utm_medium and not referrer_host:
        return "direct"
    is_search = source in SEARCH_ENGINES
    is_social = source in SOCIAL_NETWORKS
    paid = bool(medium) and bool(_PAID.match(medium))
    if paid and is_search:
        return "paid_search"
    if paid and is_social:
        return "paid_social"
    if medium in _DISPLAY:
        return "display"
    if medium == "organic" or (is_search and not medium):
        return "organic_search"
    if is_social or medium in _SOCIAL_MEDIUM:
        return "organic_social"
    if _EMAIL.match(medium) or _EMAIL.match(utm_source.strip(" ").lower()):
        return "email"
    if medium == "affiliate":
        return "affiliates"
    if paid:
        return "paid_other"
    if medium == "referral" or (not utm_source and not utm_medium and referrer_host):
        return "referral"
    if is_search:
        return "organic_search"
    return "unassigned"
