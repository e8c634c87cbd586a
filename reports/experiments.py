"""`clickstream experiments`: per-variant report of every A/B experiment.

Counts come from v_variant_lift (definitions of sql/0006_views.sql, read from the fold's `variant_daily`
since sql/0103_variant_rollup.sql: a visitor belongs to the variant of their first exposure; a
converter has a lead_created at or after it; as fresh as the last fold), read with
`reports.query.run_cli_query`, so the report works on the embedded directory, a ClickHouse
server, or through a running `serve`'s query port. `--site` / `--experiment` filter in Python: no
user input ever goes into the SQL text.

Per variant: visitors, converters, conversion rate, lift against control with its 95% interval,
z and two-sided p-value (pooled two-proportion z-test), the difference's 95% interval as
v_variant_lift computes it, and the Bayesian chance to beat control. Per experiment: the
sample-ratio-mismatch check. Formulas and sources: reports.stats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

from clickstream.core.settings import Settings
from reports import stats
from reports.output import format_table
from reports.query import run_cli_query

LIFT_SQL = """
SELECT site_id, experiment_id, variant_id, is_control, visitors, converters,
       control_visitors, control_converters, ci95_low, ci95_high
FROM v_variant_lift
ORDER BY site_id, experiment_id, is_control DESC, variant_id
"""


def _num(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def build_report(rows: Sequence[Sequence[Any]], *, site: str | None = None,
                 experiment: str | None = None) -> list[dict[str, Any]]:
    """Experiments from v_variant_lift rows (LIFT_SQL's columns), filtered by site / experiment.

    Each: {site_id, experiment_id, control, visitors, srm: {p_value, alpha, mismatch}, variants: [
    {variant_id, is_control, visitors, converters, conversion_rate, lift, lift_ci95_low,
    lift_ci95_high, diff_ci95_low, diff_ci95_high, z, p_value, chance_to_beat_control}]}.
    Rates and lifts are fractions (0.15 = 15%); undefined values are None.
    """
    grouped: dict[tuple[str, str], list[Sequence[Any]]] = {}
    for row in rows:
        site_id, experiment_id = str(row[0]), str(row[1])
        if (site is None or site_id == site) and (experiment is None or experiment_id == experiment):
            grouped.setdefault((site_id, experiment_id), []).append(row)
    report = []
    for (site_id, experiment_id), members in grouped.items():
        variants = []
        control = ""
        for _, _, variant_id, is_control, n, c, n0, c0, diff_low, diff_high in members:
            n, c, n0, c0 = int(n), int(c), int(n0), int(c0)
            entry: dict[str, Any] = {
                "variant_id": str(variant_id), "is_control": bool(is_control), "visitors": n, "converters": c,
                "conversion_rate": c / n if n else None,
            }
            if is_control:
                control = str(variant_id)
                entry.update(lift=None, lift_ci95_low=None, lift_ci95_high=None, diff_ci95_low=None,
                             diff_ci95_high=None, z=None, p_value=None, chance_to_beat_control=None)
            else:
                z, p = stats.z_test(c, n, c0, n0)
                low, high = stats.lift_interval(c, n, c0, n0)
                entry.update(
                    lift=(c / n) / (c0 / n0) - 1 if n and n0 and c0 else None,
                    lift_ci95_low=_num(low), lift_ci95_high=_num(high),
                    diff_ci95_low=_num(None if diff_low is None else float(diff_low)),
                    diff_ci95_high=_num(None if diff_high is None else float(diff_high)),
                    z=_num(z), p_value=_num(p), chance_to_beat_control=stats.chance_to_beat(c, n, c0, n0),
                )
            variants.append(entry)
        srm = stats.srm_p_value([v["visitors"] for v in variants])
        report.append({
            "site_id": site_id, "experiment_id": experiment_id, "control": control,
            "visitors": sum(v["visitors"] for v in variants),
            "srm": {"p_value": _num(srm), "alpha": stats.SRM_ALPHA,
                    "mismatch": not math.isnan(srm) and srm < stats.SRM_ALPHA},
            "variants": variants,
        })
    return report


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.2f}%" if signed else f"{value * 100:.2f}%"


def format_report(report: Sequence[dict[str, Any]]) -> str:
    """Plain text: per experiment a header with the SRM verdict, then one line per variant."""
    if not report:
        return "no experiment exposures found (events with `variants` feed v_variant_lift)"
    blocks = []
    for exp in report:
        srm = exp["srm"]
        if srm["p_value"] is None:
            verdict = "SRM check: n/a"
        elif srm["mismatch"]:
            verdict = (f"SAMPLE RATIO MISMATCH: p={srm['p_value']:.3g} < {srm['alpha']} against an equal split; "
                       "assignment or tracking is broken, do not trust these results")
        else:
            verdict = f"SRM check: ok (p={srm['p_value']:.3g})"
        header = (f"site {exp['site_id']} · experiment {exp['experiment_id']} · control {exp['control']} · "
                  f"{exp['visitors']} visitors · {verdict}")
        rows = []
        for v in exp["variants"]:
            interval = ("-" if v["lift_ci95_low"] is None
                        else f"[{_pct(v['lift_ci95_low'], True)}, {_pct(v['lift_ci95_high'], True)}]")
            rows.append([
                v["variant_id"] + (" (control)" if v["is_control"] else ""), v["visitors"], v["converters"],
                _pct(v["conversion_rate"]), _pct(v["lift"], True), interval,
                "-" if v["p_value"] is None else f"{v['p_value']:.4g}",
                _pct(v["chance_to_beat_control"]),
            ])
        columns = ["variant", "visitors", "converters", "rate", "lift", "lift 95% CI", "p-value",
                   "chance to beat control"]
        blocks.append(header + "\n" + format_table(columns, rows))
    return "\n\n".join(blocks)


def run_report(settings: Settings, *, site: str | None = None, experiment: str | None = None,
               fmt: str = "table") -> str:
    """The report as text (`fmt` "table") or one JSON document {"experiments": [...]} ("json").

    Raises what `run_cli_query` raises (QueryError, RuntimeError when the embedded directory is
    held by a serve that cannot be reached), ValueError for an unknown `fmt`.
    """
    if fmt not in ("table", "json"):
        raise ValueError(f"format must be table or json, got {fmt!r}")
    result = run_cli_query(settings, LIFT_SQL)
    report = build_report(result["rows"], site=site, experiment=experiment)
    if fmt == "json":
        return orjson.dumps({"experiments": report}, option=orjson.OPT_INDENT_2).decode()
    return format_report(report)
