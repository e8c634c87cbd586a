"""Timestamps: one parser for what clients send, one bound, and the two text forms we write.

- `parse_ts`: epoch milliseconds from integer ms or an RFC 3339 string (schemas/event.schema.json
  `ts`, schemas/stitch_request.schema.json `occurred_at`).
- `MIN_TS_MS`: 2000-01-01T00:00:00Z, the lower bound of the CHECK constraint on `events.ts`
  (sql/0001_events.sql); the importer and the stitcher refuse earlier instants with it.
- `rfc3339`: `2024-06-01T12:00:00.000Z`, the form of every timestamp in JSON we emit
  (schemas/lead_created.schema.json).
- `ch_datetime`: `2024-06-01 12:00:00.000`, ClickHouse's unambiguous DateTime64(3) text form in
  JSONEachRow (a bare JSON integer would be read as seconds).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ONE_MS = dt.timedelta(milliseconds=1)
#: 2000-01-01T00:00:00Z in epoch ms: the CHECK constraint `ts_after_2000` of `events`.
MIN_TS_MS = 946_684_800_000
_FRACTION = re.compile(r"\.(\d{6})\d+")


def parse_ts(value: Any) -> int:
    """Epoch milliseconds (UTC) of a schema-valid timestamp: integer ms, or an RFC 3339 string.

    An integral float (`1.7e12`, which JSON Schema counts as an integer) is taken as ms.
    Fractions beyond microseconds are truncated; the result is floored to the millisecond with
    integer arithmetic (no float rounding). Raises ValueError for a non-integral number, a
    string without a UTC offset, or one that matches the schema's pattern but is no real
    instant (month 13, hour 25, offset +99:00, ...).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{value!r} is not a whole number of milliseconds")
        return int(value)
    text = _FRACTION.sub(r".\1", str(value).upper())
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no UTC offset")
    return (parsed - EPOCH) // ONE_MS


def rfc3339(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, `2024-06-01T12:00:00.000Z`, from epoch ms (integer arithmetic)."""
    moment = EPOCH + dt.timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def ch_datetime(ms: int) -> str:
    """Epoch ms -> 'YYYY-MM-DD hh:mm:ss.mmm' (UTC), ClickHouse's DateTime64(3) text form."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000
