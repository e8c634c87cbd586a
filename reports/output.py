"""How `clickstream sql` and `clickstream experiments` print results: a plain text table, or JSON lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """JSON of any result value (dates and other non-JSON values as their string)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: header, rule, one line per row, then `(N rows)`."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (dict, list, tuple)):
        return dumps(value).decode()
    return str(value)
