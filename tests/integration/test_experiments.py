"""Lift: a generated experiment with a known true effect, through /collect and /stitch on a real serve;
v_variant_lift and `clickstream experiments --format json` against statsmodels, and an injected
sample-ratio mismatch flagged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from tests.conftest import ROOT, Server, now_ms, sql_rows

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
SITE = "lift.example"
TRUE_RATE = {"control": 0.10, "B": 0.22}  # the known true effect: +120% relative lift


def test_lift_and_srm_agree_with_statsmodels(server_factory: Callable[..., Server]) -> None:
    server = server_factory("serve", stitch_token="tok", sql_password="adm", fold_interval_s="0.5")
    rng = np.random.default_rng(42)
    t0 = now_ms() - 3_600_000
    events: list[dict[str, Any]] = []
    truth: dict[str, dict[str, list[int]]] = {"checkout": {}, "banner": {}}  # variant -> [visitors, converters]
    converters: list[str] = []
    for i in range(600):
        anon = f"lift-{i}"
        checkout = "control" if i % 2 == 0 else "B"  # an exact 300/300 split: no SRM
        variants = {"checkout": checkout}
        if i < 450:  # a second experiment with a broken 2:1 assignment (300 vs 150)
            variants["banner"] = "control" if i % 3 else "wide"
        events.append({"type": "page_view", "site_id": SITE, "anonymous_id": anon, "session_id": f"{anon}-s",
                       "ts": t0 + i, "url": f"https://{SITE}/checkout", "variants": variants})
        converted = bool(rng.random() < TRUE_RATE[checkout])
        if converted:
            converters.append(anon)
        for exp, variant in variants.items():
            counts = truth[exp].setdefault(variant, [0, 0])
            counts[0] += 1
            counts[1] += int(converted)
    http = server.client(headers={"User-Agent": UA})
    for start in range(0, len(events), 100):
        assert http.post("/collect", json=events[start : start + 100]).status_code == 202

    def convert(anon: str) -> int:
        response = server.client().post("/stitch", json={"lead_id": f"order-{anon}", "anonymous_id": anon},
                                        headers={"Authorization": "Bearer tok"})
        return response.status_code

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(convert, converters)) == {201}

    def lift_rows() -> list[list[Any]]:
        return sql_rows(server, "SELECT experiment_id, variant_id, is_control, visitors, converters, z, p_value "
                                f"FROM v_variant_lift WHERE site_id = '{SITE}' ORDER BY experiment_id, variant_id")

    def settled() -> bool:
        return sum(int(r[4]) for r in lift_rows() if r[0] == "checkout") == len(converters)

    deadline = time.monotonic() + 60  # the relay delivers within milliseconds; this only bounds a failure
    while not settled():
        assert time.monotonic() < deadline, "leads did not reach lead_events (and a fold, variant_daily)"
        time.sleep(0.05)
    view = {(r[0], r[1]): r for r in lift_rows()}
    assert {k: (r[3], r[4]) for k, r in view.items()} == {
        (exp, variant): tuple(counts) for exp, per in truth.items() for variant, counts in per.items()}

    env = {k: v for k, v in os.environ.items() if not k.startswith("CLICKSTREAM_")}
    env.update(CLICKSTREAM_DATA_DIR=str(server.data_dir), CLICKSTREAM_SQL_PASSWORD="adm",
               CLICKSTREAM_SQL_HOST="127.0.0.1", CLICKSTREAM_SQL_PORT=server.env["CLICKSTREAM_SQL_PORT"])
    cli = subprocess.run([sys.executable, "-m", "clickstream.cli", "experiments", "--site", SITE, "--format", "json"],
                         env=env, cwd=ROOT, capture_output=True, timeout=120)
    assert cli.returncode == 0, cli.stderr.decode()
    report = {e["experiment_id"]: e for e in orjson.loads(cli.stdout)["experiments"]}

    for exp, control in (("checkout", "control"), ("banner", "control")):
        assert report[exp]["control"] == control
        n0, c0 = truth[exp][control]
        for variant, (n, c) in truth[exp].items():
            if variant == control:
                continue
            z_ref, p_ref = (float(x) for x in proportions_ztest([c, c0], [n, n0]))
            row = view[(exp, variant)]
            assert row[5] == pytest.approx(z_ref, abs=1e-6) and row[6] == pytest.approx(p_ref, abs=1e-6)
            got = next(v for v in report[exp]["variants"] if v["variant_id"] == variant)
            assert (got["visitors"], got["converters"]) == (n, c)
            assert got["z"] == pytest.approx(z_ref, abs=1e-6) and got["p_value"] == pytest.approx(p_ref, abs=1e-6)
            assert got["lift"] == pytest.approx((c / n) / (c0 / n0) - 1, abs=1e-9)
            low, high = confint_proportions_2indep(c, n, c0, n0, compare="ratio", method="log")
            assert (got["lift_ci95_low"], got["lift_ci95_high"]) == (pytest.approx(low - 1, abs=1e-6),
                                                                     pytest.approx(high - 1, abs=1e-6))
            draws = np.random.default_rng(1)
            mc = (draws.beta(1 + c, 1 + n - c, 400_000) > draws.beta(1 + c0, 1 + n0 - c0, 400_000)).mean()
            assert got["chance_to_beat_control"] == pytest.approx(float(mc), abs=0.004)
    assert report["checkout"]["variants"][1]["p_value"] < 0.05  # the true effect is detected
    assert report["checkout"]["srm"]["mismatch"] is False
    assert report["banner"]["srm"]["mismatch"] is True
    assert report["banner"]["srm"]["p_value"] < 0.001

    table = subprocess.run([sys.executable, "-m", "clickstream.cli", "experiments", "--experiment", "banner"],
                           env=env, cwd=ROOT, capture_output=True, timeout=120)
    assert table.returncode == 0, table.stderr.decode()
    assert b"SAMPLE RATIO MISMATCH" in table.stdout and b"checkout" not in table.stdout
