"""Experiment statistics on (converters, visitors) counts, with scipy.stats (no hand-rolled tests).

- `z_test`: two-sided two-proportion z-test with pooled variance, identical to statsmodels'
  `proportions_ztest` and to ClickHouse's `proportionsZTest(..., 'pooled')` in v_variant_lift:
  computed as Pearson's chi-square on the 2x2 table without Yates' correction
  (`scipy.stats.chi2_contingency(correction=False)`), whose statistic is z² and whose p-value is
  the z-test's two-sided one; z carries the sign of (variant rate - control rate).
- `lift_interval`: 95% interval of the relative lift (rate / control rate - 1) from the relative
  risk's log-normal (Katz) interval, `scipy.stats.contingency.relative_risk`.
- `chance_to_beat`: Bayesian P(variant rate > control rate) with independent Beta(1, 1) priors
  (beta-binomial, as GrowthBook and PostHog report it): integral of f_B(x)·F_A(x) dx by
  `scipy.integrate.quad` over the region holding the posteriors' mass (deterministic).
- `srm_p_value`: sample-ratio mismatch, `scipy.stats.chisquare` of visitors against an equal
  split; flagged below SRM_ALPHA = 0.001 (GrowthBook's and PostHog's threshold).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import integrate
from scipy.stats import beta, chi2_contingency, chisquare
from scipy.stats.contingency import relative_risk

SRM_ALPHA = 0.001
CONFIDENCE = 0.95
#: Posterior tail mass left out of the integration range (both ends, both posteriors).
_TAIL = 1e-12


def z_test(converters: int, visitors: int, control_converters: int, control_visitors: int) -> tuple[float, float]:
    """(z, two-sided p-value) of variant vs control; (nan, nan) when undefined (no visitors, or a
    pooled rate of 0 or 1)."""
    if visitors <= 0 or control_visitors <= 0:
        return math.nan, math.nan
    table = [[converters, visitors - converters], [control_converters, control_visitors - control_converters]]
    try:
        result = chi2_contingency(table, correction=False)
    except ValueError:  # a zero expected frequency: nobody or everybody converted
        return math.nan, math.nan
    diff = converters / visitors - control_converters / control_visitors
    z = math.copysign(math.sqrt(float(result.statistic)), diff)
    return z, float(result.pvalue)


def lift_interval(converters: int, visitors: int, control_converters: int,
                  control_visitors: int) -> tuple[float, float]:
    """95% interval of the relative lift; (nan, nan) when either arm has no converter."""
    if converters <= 0 or control_converters <= 0 or visitors <= 0 or control_visitors <= 0:
        return math.nan, math.nan
    ci = relative_risk(converters, visitors, control_converters, control_visitors).confidence_interval(CONFIDENCE)
    return float(ci.low) - 1.0, float(ci.high) - 1.0


def chance_to_beat(converters: int, visitors: int, control_converters: int, control_visitors: int) -> float:
    """P(p_variant > p_control) under Beta(1 + converters, 1 + non-converters) posteriors."""
    variant = beta(1 + converters, 1 + visitors - converters)
    control = beta(1 + control_converters, 1 + control_visitors - control_converters)
    low = min(float(variant.ppf(_TAIL)), float(control.ppf(_TAIL)))
    high = max(float(variant.isf(_TAIL)), float(control.isf(_TAIL)))
    # TRICKY: quad samples adaptively but may step over a narrow peak on [0, 1]; integrating over
    # the posteriors' own range, with their means as break points, keeps it accurate at any n.
    points = sorted({float(variant.mean()), float(control.mean())})
    value, _ = integrate.quad(lambda x: float(variant.pdf(x) * control.cdf(x)), low, high, points=points, limit=200)
    # P(variant > control) also includes the mass of the variant below `low`, which is ~0.
    return min(1.0, max(0.0, float(value)))


def srm_p_value(visitors: Sequence[int]) -> float:
    """p-value of the chi-square goodness of fit of `visitors` per variant to an equal split
    (nan with fewer than two variants or no visitor)."""
    if len(visitors) < 2 or sum(visitors) <= 0:
        return math.nan
    return float(chisquare(list(visitors)).pvalue)
