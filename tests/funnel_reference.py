"""Readable reference of a funnel (ClickHouse's `windowFunnel`, default mode) over generated events,
for the dashboard's funnel panel and the `v_funnel` / `v_funnel_sessions` views (sql/0110_dashboard_views.sql).

A step is a page path (starting with "/": a page_view of that path) or an event type. Per unit
(visitor or session): each event contributes a (timestamp, step) mark for every step it matches,
processed in (timestamp, step) order; a step-1 mark starts a chain at its timestamp; a step-k mark
extends the chain of step k-1 when it lies within `window_s` of that chain's start; the unit's level is
the deepest step reached (ClickHouse: src/AggregateFunctions/AggregateFunctionWindowFunnel.h).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any


def path_of(url: str) -> str:
    """The path of an absolute URL, without query and fragment ("/" when empty)."""
    rest = url.split("://", 1)[1]
    return ("/" + rest.split("/", 1)[1] if "/" in rest else "/").split("?", 1)[0].split("#", 1)[0]


def matches(event: dict[str, Any], step: str) -> bool:
    if step.startswith("/"):
        return bool(event["type"] == "page_view" and path_of(event["url"]) == step)
    return bool(event["type"] == step)


def funnel(events: Iterable[dict[str, Any]], steps: list[str], window_s: int, per: str = "visitor") -> list[int]:
    """Units (distinct anonymous_id, or session_id with per="session") reaching each step."""
    marks: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for event in events:
        unit = event["session_id"] if per == "session" else event["anonymous_id"]
        marks[unit].extend((int(event["ts"]), k) for k, step in enumerate(steps) if matches(event, step))
    reached = [0] * len(steps)
    for unit_marks in marks.values():
        start: list[int | None] = [None] * len(steps)
        for ts, k in sorted(unit_marks):
            if k == 0:
                start[0] = ts
            else:
                previous = start[k - 1]
                if previous is not None and ts <= previous + window_s * 1000:
                    start[k] = previous
        level = max((k + 1 for k in range(len(steps)) if start[k] is not None), default=0)
        for k in range(level):
            reached[k] += 1
    return reached
