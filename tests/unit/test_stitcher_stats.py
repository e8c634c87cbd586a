"""Experiment statistics against independent implementations: statsmodels and a seeded Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from reports import stats
from reports.experiments import build_report


@st.composite
def arms(draw: st.DrawFn) -> tuple[int, int, int, int]:
    n1 = draw(st.integers(2, 5000))
    n0 = draw(st.integers(2, 5000))
    c1 = draw(st.integers(1, n1 - 1))
    c0 = draw(st.integers(1, n0 - 1))
    return c1, n1, c0, n0


@settings(max_examples=80, deadline=None)
@given(arms())
def test_z_test_equals_statsmodels_proportions_ztest(counts: tuple[int, int, int, int]) -> None:
    c1, n1, c0, n0 = counts
    z, p = stats.z_test(c1, n1, c0, n0)
    z_ref, p_ref = proportions_ztest([c1, c0], [n1, n0])
    assert z == pytest.approx(float(z_ref), abs=1e-6)
    assert p == pytest.approx(float(p_ref), abs=1e-6)


@settings(max_examples=50, deadline=None)
@given(arms())
def test_lift_interval_equals_statsmodels_log_ratio_interval(counts: tuple[int, int, int, int]) -> None:
    c1, n1, c0, n0 = counts
    low, high = stats.lift_interval(c1, n1, c0, n0)
    ref_low, ref_high = confint_proportions_2indep(c1, n1, c0, n0, compare="ratio", method="log")
    assert low == pytest.approx(ref_low - 1, abs=1e-6)
    assert high == pytest.approx(ref_high - 1, abs=1e-6)


@pytest.mark.parametrize("counts", [
    (150, 1000, 100, 1000), (5, 20, 3, 20), (0, 10, 0, 10), (15_000, 100_000, 14_800, 100_000),
    (1, 2_000_000, 0, 2_000_000), (480, 500, 490, 500),
])
def test_chance_to_beat_matches_a_seeded_monte_carlo(counts: tuple[int, int, int, int]) -> None:
    c1, n1, c0, n0 = counts
    rng = np.random.default_rng(7)
    draws = 400_000  # standard error <= 0.0008
    mc = float((rng.beta(1 + c1, 1 + n1 - c1, draws) > rng.beta(1 + c0, 1 + n0 - c0, draws)).mean())
    assert stats.chance_to_beat(c1, n1, c0, n0) == pytest.approx(mc, abs=0.004)


def test_undefined_statistics_are_nan_not_errors() -> None:
    assert all(math.isnan(v) for v in stats.z_test(0, 10, 0, 10))
    assert all(math.isnan(v) for v in stats.lift_interval(3, 10, 0, 10))
    assert math.isnan(stats.srm_p_value([10]))


def test_srm_is_flagged_below_one_in_a_thousand_against_an_equal_split() -> None:
    rows = [
        ("s", "fair", "control", 1, 500, 50, 500, 50, None, None),
        ("s", "fair", "B", 0, 520, 60, 500, 50, -0.02, 0.05),
        ("s", "skewed", "control", 1, 600, 60, 600, 60, None, None),
        ("s", "skewed", "B", 0, 400, 40, 600, 60, -0.03, 0.03),
    ]
    report = {e["experiment_id"]: e for e in build_report(rows)}
    assert report["fair"]["srm"]["mismatch"] is False
    assert report["skewed"]["srm"]["mismatch"] is True
    # chi-square with 1 degree of freedom: 2 * 100**2 / 500 = 40, survival function erfc(sqrt(40 / 2))
    assert report["skewed"]["srm"]["p_value"] == pytest.approx(math.erfc(math.sqrt(20)), rel=1e-9)
    only_b = build_report(rows, site="s", experiment="fair")
    assert [v["variant_id"] for v in only_b[0]["variants"]] == ["control", "B"]
    assert build_report(rows, site="other") == []
