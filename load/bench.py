"""`make bench`: `python -m load.bench [name ...]` runs the named benchmarks (default: all).

Each entry of BENCHMARKS is a no-argument callable returning a JSON-able dict of results (and
writing its own file under load/results/). Add a benchmark by adding an entry.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from load import (
    bench_beacon,
    bench_collector,
    bench_dashboard,
    bench_dedup,
    bench_engagement,
    bench_flusher,
    bench_import,
    bench_partitions,
    bench_pipeline,
    bench_query_port,
    bench_rollup_versions,
    bench_schemas,
    bench_storage,
    bench_views,
    bench_workers,
)

BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "collector": bench_collector.run,
    "ua-placement": bench_collector.run_ua_placement,
    "flusher": bench_flusher.run,
    "flusher-single": bench_flusher.run_single,
    "flusher-grouped": bench_flusher.run_grouped,
    "flusher-single-grouped": bench_flusher.run_single_grouped,
    "flusher-transport": bench_flusher.run_transport,
    "dedup": bench_dedup.run,
    "import": bench_import.run,
    "freshness": bench_pipeline.run_freshness,
    "views": bench_views.run,
    "rss": bench_pipeline.run_rss,
    "query_port": bench_query_port.run,
    "storage": bench_storage.run,
    "workers": bench_workers.run,
    "beacon": bench_beacon.run,
    "schemas": bench_schemas.run,
    "engagement_join": bench_engagement.run,
    "dashboard": bench_dashboard.run,
    "flusher-rollups": bench_flusher.run_rollups_side_by_side,
    "rollup-versions": bench_rollup_versions.run,
    "partitions": bench_partitions.run,
}
#: Left out of `make bench` (all of BENCHMARKS): `make bench-large`.
LARGE: dict[str, Callable[[], dict[str, Any]]] = {
    "views-large": bench_views.run_large,
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks named in `argv` (all when empty); exit status 2 for an unknown name."""
    names = list(argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    known = {**BENCHMARKS, **LARGE}
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== {name}", flush=True)
        result = known[name]()
        if "results_file" in result:
            print(f"results: {result['results_file']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
