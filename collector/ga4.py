"""`clickstream import --format ga4`: one row of a GA4 BigQuery export -> one clickstream event.

Input: the daily `events_YYYYMMDD` tables of a Google Analytics 4 property exported as JSON lines
(`bq extract --destination_format NEWLINE_DELIMITED_JSON`); schema:
https://developers.google.com/analytics/bigquery/event-schema (also
https://support.google.com/analytics/answer/7029846). Integers may come as JSON numbers or as
strings (BigQuery writes INT64 as strings in JSON); both are read.

Mapping (docs/architecture.md "Command line", `clickstream import`), clickstream <- GA4 export:
- `type` <- `event_name`, lower-cased (`page_view`, `click`, `scroll`, `session_start`, ... kept);
- `ts` <- `event_timestamp` (µs since epoch, UTC) // 1000;
- `anonymous_id` <- `user_pseudo_id`;
- `session_id` <- `<user_pseudo_id>:<event_params.ga_session_id>` (ga_session_id alone repeats
  across users);
- `url` <- `event_params.page_location`; `referrer` <- `page_referrer`; `title` <- `page_title`;
- `utm` <- `collected_traffic_source.manual_source / manual_medium / manual_campaign_name /
  manual_term / manual_content` (the event's own campaign); for `first_visit` without them,
  `traffic_source.source / medium / name` (the user's first touch); `(direct)`, `(none)`,
  `(not set)` read as empty; otherwise absent, so ClickHouse reads `utm_*` from `url`;
- `props` <- the other `event_params` (`string_value`, `int_value`, `float_value` or
  `double_value`); more than the schema's 32 make the line a schema violation;
- `lang` <- `device.language`; `site_id` <- `--site`, else the host of `page_location`;
- `event_id`: GA4 has none; a UUID v5 of the line (collector.importer), so a re-import is stored once;
- browser, os, device type <- `device.web_info.browser` (+ `_version`), `device.operating_system`
  (+ `_version`), `device.category`; GA4 exports no User-Agent (`user_agent` is empty) and filters
  known bots, so `is_bot` = 0.

An event without `page_location` (app events) or `user_pseudo_id` does not map: it is rejected
with reason `schema_violation` and its line number, like any invalid line.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson

#: event_params consumed by the mapping itself (not copied to props).
_MAPPED_PARAMS = frozenset({"ga_session_id", "page_location", "page_referrer", "page_title"})
_EMPTY_SOURCES = frozenset({"(direct)", "(none)", "(not set)", "(not provided)", "(referral)", "(organic)"})


class Unmappable(ValueError):
    """A GA4 row that cannot become an event: `path` (JSON Pointer into the row) and a message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def _param_value(value: Any) -> str | int | float | None:
    if not isinstance(value, dict):
        return None
    for key in ("string_value", "int_value", "double_value", "float_value"):
        found = value.get(key)
        if found is not None:
            if key == "int_value":
                return int(found)
            if key in ("double_value", "float_value"):
                return float(found)
            return str(found)
    return None


def _params(row: dict[str, Any]) -> dict[str, str | int | float]:
    out: dict[str, str | int | float] = {}
    for param in row.get("event_params") or ():
        if isinstance(param, dict) and isinstance(param.get("key"), str):
            value = _param_value(param.get("value"))
            if value is not None:
                out[param["key"]] = value
    return out


def _source(value: Any) -> str:
    text = str(value or "")
    return "" if text in _EMPTY_SOURCES else text


def _utm(row: dict[str, Any], event_name: str) -> dict[str, str]:
    collected = row.get("collected_traffic_source") or {}
    utm = {
        "source": _source(collected.get("manual_source")),
        "medium": _source(collected.get("manual_medium")),
        "campaign": _source(collected.get("manual_campaign_name")),
        "term": _source(collected.get("manual_term")),
        "content": _source(collected.get("manual_content")),
    }
    if not any(utm.values()) and event_name == "first_visit":
        first = row.get("traffic_source") or {}
        utm.update(source=_source(first.get("source")), medium=_source(first.get("medium")),
                   campaign=_source(first.get("name")))
    return {k: v for k, v in utm.items() if v}


def to_event(row: Any, site_id: str | None = None) -> tuple[dict[str, Any], bytes]:
    """The clickstream event of one GA4 export row, and its User-Agent stamp (`agent_stamp`).

    Raises Unmappable (path, message) for a row that is not an object or lacks what an event
    requires (page_location, user_pseudo_id, event_name, event_timestamp).
    """
    if not isinstance(row, dict):
        raise Unmappable("", "a GA4 export row is a JSON object")
    name = row.get("event_name")
    if not isinstance(name, str) or not name:
        raise Unmappable("/event_name", "event_name missing")
    try:
        ts_ms = int(row["event_timestamp"]) // 1000
    except (KeyError, TypeError, ValueError):
        raise Unmappable("/event_timestamp", "event_timestamp (µs) missing or not an integer") from None
    pseudo_id = row.get("user_pseudo_id")
    if not pseudo_id:
        raise Unmappable("/user_pseudo_id", "user_pseudo_id missing")
    params = _params(row)
    url = params.get("page_location")
    if not isinstance(url, str) or not url:
        raise Unmappable("/event_params/page_location", "no page_location: not a web event")
    session = params.get("ga_session_id")
    event: dict[str, Any] = {
        "type": name.lower(),
        "site_id": site_id or (urlsplit(url).hostname or ""),
        "anonymous_id": str(pseudo_id),
        "session_id": f"{pseudo_id}:{session if session is not None else 'none'}",
        "ts": ts_ms,
        "url": url,
    }
    if isinstance(params.get("page_referrer"), str) and params["page_referrer"]:
        event["referrer"] = params["page_referrer"]
    if isinstance(params.get("page_title"), str):
        event["title"] = params["page_title"]
    utm = _utm(row, name)
    if utm:
        event["utm"] = utm
    props = {k: v for k, v in params.items() if k not in _MAPPED_PARAMS}
    if props:  # more than the schema's 32 makes the line a schema violation, kept with its reason
        event["props"] = props
    device = row.get("device") or {}
    if device.get("language"):
        event["lang"] = str(device["language"])
    web = device.get("web_info") or {}
    stamp = agent_stamp(str(web.get("browser") or ""), str(web.get("browser_version") or ""),
                        str(device.get("operating_system") or ""), str(device.get("operating_system_version") or ""),
                        str(device.get("category") or ""))
    return event, stamp


@lru_cache(maxsize=4096)
def agent_stamp(browser: str, browser_version: str, os: str, os_version: str, device_type: str) -> bytes:
    """The User-Agent members of a row (clickstream.core.useragent.agent_fragment's shape) from GA4's
    device fields; GA4 exports no User-Agent string and no bots."""
    return orjson.dumps({"user_agent": "", "browser": browser, "browser_version": browser_version, "os": os,
                         "os_version": os_version, "device_type": device_type, "is_bot": 0})[1:-1]
