"""What versioned schemas cost the collector's pipeline: `collector.pipeline.process` now (every
accepted version compiled, the named one picked per request, upcast before the spool) against the
same function of a git revision before them (default `main`, one schema), in the same process.

Method: the baseline is `collector/pipeline.py` of the revision, loaded as a module of its own (its
imports resolve to today's modules, whose `EventValidator` it used unchanged) and called with an
`EventValidator` of that revision's `schemas/event.schema.json`. Payloads: the beacon event of the
collector benchmark (load/bench_collector.py, ~600 bytes), one per request and 50 per request;
without `schema` (old beacons: the oldest version, upcast), and naming the current version
(today's beacon.js, with `seq`). Each case is timed as the best of `REPEAT` rounds of `NUMBER`
requests, baseline and now alternating within each round (background load on a shared machine hits
both), timed in CPU time of the thread (`time.thread_time`: waiting for a core shared with other
processes does not count, which wall time on a loaded machine would); the result is CPU µs per
event and the ratio now/baseline.
In-process timing of the validation step only; the HTTP benchmark is `python -m load.bench collector`.
"""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from collector.pipeline import process
from collector.schemas import EventSchemas
from collector.validation import EventValidator
from load.bench_collector import beacon_event
from load.procs import ROOT
from load.results import write_result

REPEAT = 15
NUMBER = 500


def _baseline(revision: str) -> tuple[Any, EventValidator]:
    """(process function, validator) of `revision`."""
    source = subprocess.run(["git", "show", f"{revision}:collector/pipeline.py"], cwd=ROOT, check=True,
                            capture_output=True).stdout
    schema = orjson.loads(subprocess.run(["git", "show", f"{revision}:schemas/event.schema.json"], cwd=ROOT,
                                         check=True, capture_output=True).stdout)
    folder = Path(tempfile.mkdtemp())
    path = folder / "baseline_pipeline.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("baseline_pipeline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_pipeline"] = module
    spec.loader.exec_module(module)
    return module.process, EventValidator(schema)


def _time(cases: list[tuple[Any, Any, list[dict[str, Any]]]]) -> list[float]:
    """Best CPU µs per event of each `(process, validator, payload)` on copies of its payload,
    interleaved: each of `REPEAT` rounds times every case once (`NUMBER` requests)."""
    now = int(time.time() * 1000)
    best = [float("inf")] * len(cases)
    for _ in range(REPEAT):
        for i, (fn, validator, payload) in enumerate(cases):
            copies = [copy.deepcopy(payload) for _ in range(NUMBER)]
            started = time.thread_time()
            for events in copies:
                fn(events, validator, received_at_ms=now, user_agent="bench", ip_hash="0123abcd",
                   max_age_ms=3_600_000, max_skew_ms=3_600_000)
            best[i] = min(best[i], time.thread_time() - started)
            check = fn(copy.deepcopy(payload), validator, received_at_ms=now, user_agent="bench", ip_hash="0123abcd",
                       max_age_ms=3_600_000, max_skew_ms=3_600_000)
            assert len(check.records) == len(payload), check.errors[:1]
    return [b / NUMBER / len(cases[i][2]) * 1e6 for i, b in enumerate(best)]


def run(revision: str = "main") -> dict[str, Any]:
    old_process, old_validator = _baseline(revision)
    schemas = EventSchemas()
    now = int(time.time() * 1000)
    current = schemas.current.short_name
    out: dict[str, Any] = {"benchmark": "schema_versions", "baseline_revision": revision,
                           "versions": [v.version for v in schemas.versions], "cases": {}}
    for size in (1, 50):
        unversioned = [beacon_event(now, i) for i in range(size)]
        named = [{**beacon_event(now, i), "schema": current, "seq": i} for i in range(size)]
        # the baseline knows no `schema` or `seq`: it gets the unversioned events
        base, now_plain, now_named = _time([(old_process, old_validator, unversioned),
                                            (process, schemas, unversioned), (process, schemas, named)])
        label = "single" if size == 1 else f"batch{size}"
        out["cases"][label] = {"baseline_us_per_event": round(base, 3),
                               "now_unversioned_us_per_event": round(now_plain, 3),
                               "now_current_version_us_per_event": round(now_named, 3),
                               "ratio_unversioned": round(now_plain / base, 3),
                               "ratio_current_version": round(now_named / base, 3)}
    return write_result("schemas", out)


if __name__ == "__main__":
    run(*sys.argv[1:2])
