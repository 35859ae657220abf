"""Paired comparisons of a model with a baseline, per query, with a seeded bootstrap interval.

A difference without an interval is not a win (SPEC section 7). For one metric, the model's and
the baseline's per-query values on the same queries are paired; ``mean_diff`` is the mean of
(model - baseline) in the metric's own units, and the 95% interval is the percentile bootstrap
of that mean over queries resampled with replacement (``N_BOOT`` resamples, a fixed seed, so the
same numbers give the same interval). The conclusion reads the metric's declared direction
(``metrics.HIGHER_IS_BETTER``): ``better`` when the interval lies entirely on the model's good
side of 0, ``worse`` when entirely on the other side, else ``indistinguishable``. With fewer than
``MIN_N`` pairs there is no interval and the conclusion is ``indistinguishable``.

A correlation that is undefined for a query (null: a flat predicted shift) counts as 0 there,
for model and baseline alike: no predicted shift carries no information about the direction of
the effect, and dropping those queries would let a model choose the queries it is judged on.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel

from harmonycell.tools.evaluation.metrics import CORRELATIONS, HIGHER_IS_BETTER, SEARCH_METRIC

N_BOOT = 2000
CONFIDENCE = 0.95
MIN_N = 3
BOOT_SEED = 0

Conclusion = Literal["better", "worse", "indistinguishable"]


class Comparison(BaseModel):
    """Model minus baseline on one metric, paired per query."""

    baseline: str
    metric: str
    n: int
    mean_diff: float
    ci_low: float | None
    ci_high: float | None
    conclusion: Conclusion


def bootstrap_mean_ci(diff: np.ndarray, seed: int = BOOT_SEED, n_boot: int = N_BOOT,
                      confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diff`` (resampling its entries)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(1)
    a = (1 - confidence) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def conclude(metric: str, ci_low: float | None, ci_high: float | None) -> Conclusion:
    if ci_low is None or ci_high is None:
        return "indistinguishable"
    if ci_low > 0:
        return "better" if HIGHER_IS_BETTER[metric] else "worse"
    if ci_high < 0:
        return "worse" if HIGHER_IS_BETTER[metric] else "better"
    return "indistinguishable"


def as_values(metric: str, values: Sequence[float | None]) -> np.ndarray:
    """Per-query values as floats; an undefined correlation is 0 (see the module docstring)."""
    fill = 0.0 if metric in CORRELATIONS else np.nan
    return np.array([fill if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)
                     for v in values], dtype=np.float64)


def compare(model: Sequence[float | None], baseline: Sequence[float | None], metric: str,
            baseline_name: str, seed: int = BOOT_SEED) -> Comparison:
    """Paired comparison of per-query values (same queries, same order)."""
    if len(model) != len(baseline):
        raise ValueError(f"{len(model)} model values vs {len(baseline)} baseline values: not paired")
    return compare_diffs(as_values(metric, model) - as_values(metric, baseline), metric, baseline_name, seed)


def compare_diffs(diff: np.ndarray, metric: str, baseline_name: str, seed: int = BOOT_SEED) -> Comparison:
    """Comparison from paired differences (model - baseline), one per independent unit."""
    diff = np.asarray(diff, dtype=np.float64)
    diff = diff[~np.isnan(diff)]
    n = int(len(diff))
    mean = float(diff.mean()) if n else 0.0
    lo = hi = None
    if n >= MIN_N:
        lo, hi = bootstrap_mean_ci(diff, seed)
    return Comparison(baseline=baseline_name, metric=metric, n=n, mean_diff=mean, ci_low=lo,
                      ci_high=hi, conclusion=conclude(metric, lo, hi))


# Metrics compared against each baseline. control_mean predicts no shift, so its DeltaPCC and
# cosine are undefined everywhere: it is compared on RMSE and the shift-corrected metric only.
COMPARED_METRICS = (SEARCH_METRIC, "DeltaPCC", "RMSE")
UNDEFINED_FOR = {"control_mean": {"DeltaPCC", "Cosine_delta"}}


def per_query(rows: Sequence[dict], metric: str) -> list[float | None]:
    """``metric`` of each per-perturbation row (``ScoreReport.per_perturbation`` dumped)."""
    return [r["metrics"].get(metric) for r in rows]


def compare_all(model_rows: Sequence[dict], baseline_rows: dict[str, Sequence[dict]],
                metrics: Sequence[str] = COMPARED_METRICS, seed: int = BOOT_SEED) -> list[Comparison]:
    """Every (baseline, metric) comparison of the model's per-query rows with each baseline's."""
    out = []
    for name, rows in baseline_rows.items():
        keys = [(r["condition"], r["context"]) for r in rows]
        if keys != [(r["condition"], r["context"]) for r in model_rows]:
            raise ValueError(f"baseline {name} was scored on other queries than the model")
        for metric in metrics:
            if metric in UNDEFINED_FOR.get(name, set()):
                continue
            out.append(compare(per_query(model_rows, metric), per_query(rows, metric), metric, name, seed))
    return out


def usefulness(comparisons: Sequence[Comparison], metric: str = SEARCH_METRIC) -> tuple[bool, dict[str, Comparison]]:
    """(useful, the deciding comparison per baseline): useful means better than every baseline
    on ``metric`` with the interval excluding 0 (SPEC sections 7 and 8)."""
    deciding = {c.baseline: c for c in comparisons if c.metric == metric}
    return bool(deciding) and all(c.conclusion == "better" for c in deciding.values()), deciding
