"""Where benchmarks leave their numbers: `load/results/<name>.json` (not committed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, result: dict[str, Any], hidden: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write `result` to load/results/<name>.json, print it (less the `hidden` keys, e.g. long
    timelines) and return it with `results_file` added (what load.bench prints)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in hidden}, indent=2))
    return {**result, "results_file": str(path)}
