"""beacon.js on the wire: the bytes the collector serves against the 4 KB budget and a baseline.

Method: `collector.app.beacon_script` as `GET /beacon.js` serves it (rjsmin, the collect path written
in, zopfli gzip) for the default paths and for first-party paths (`/js/app.js` posting to `/api/e`),
plus zlib's gzip -9 of the same minified bytes; the baseline is the beacon.js of a git revision
(default `main`) minified and gzipped the same ways. Sizes are exact: no timing involved.
"""

from __future__ import annotations

import gzip
import subprocess

import rjsmin
import zopfli.gzip

from collector.app import beacon_script
from load.procs import ROOT
from load.results import write_result

BUDGET_BYTES = 4 * 1024


def _sizes(minified: bytes) -> dict[str, int]:
    return {"minified": len(minified), "gzip_9": len(gzip.compress(minified, 9, mtime=0)),
            "zopfli": len(zopfli.gzip.compress(minified, numiterations=15))}


def baseline(revision: str = "main") -> dict[str, int] | None:
    """Sizes of collector/static/beacon.js at `revision`, None when git cannot show it."""
    shown = subprocess.run(["git", "show", f"{revision}:collector/static/beacon.js"], cwd=ROOT,
                           capture_output=True, check=False)
    if shown.returncode != 0:
        return None
    return _sizes(rjsmin.jsmin(shown.stdout.decode()).encode())


def run(revision: str = "main") -> dict[str, int | str | bool | dict[str, int] | None]:
    served = beacon_script()
    first_party = beacon_script("../api/e")
    result: dict[str, int | str | bool | dict[str, int] | None] = {
        "benchmark": "beacon_size",
        "budget_bytes": BUDGET_BYTES,
        "served_default": {**_sizes(served.minified), "on_the_wire": len(served.gzipped)},
        "served_first_party": {**_sizes(first_party.minified), "on_the_wire": len(first_party.gzipped)},
        "baseline_revision": revision,
        "baseline": baseline(revision),
        "within_budget": max(len(served.gzipped), len(first_party.gzipped)) <= BUDGET_BYTES,
    }
    return write_result("beacon", result)


if __name__ == "__main__":
    import sys

    run(*sys.argv[1:2])
