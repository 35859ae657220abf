"""Paired comparisons of a model with the baselines, per query, with an exact sign-flip test.

A difference without a test is not a win (SPEC section 7). For one metric, the model's and the
baseline's per-query values on the same queries are paired; ``mean_diff`` is the mean of
(model - baseline) in the metric's own units. Under the null (model and baseline exchangeable
on each query) every difference is equally likely to carry either sign, so the p-value is the
two-sided sign-flip permutation test of the mean (``scipy.stats.permutation_test``: exact
enumeration of all 2^n sign patterns up to ``N_RESAMPLES``, seeded Monte Carlo above). Its
false-"better" rate is at most nominal at every n (bench/interval_calibration.py measures it);
the percentile bootstrap used before was not (12% at n = 3 for a nominal 2.5%).

- Several baselines compared at once on one metric are corrected together (Holm).
- Where even a perfect result (every difference of one sign) could not reach ``ALPHA`` after
  that correction (n = 5 or fewer queries for a single baseline), the conclusion is
  ``too few units``, never "indistinguishable" or "better".
- An undefined value (null: e.g. a correlation with a prediction of no change, or the headline
  in a pool of one query) is "not applicable": the pair is dropped (``n_undefined`` counts
  them); a baseline with no defined pair on a metric gets no comparison on it (``compare`` on
  its own answers ``not applicable``). It never counts as 0 and never decides ``useful``.
- ``ci_low``/``ci_high``: the (1 - ALPHA) sign-flip interval of the mean difference (the
  differences centred on their mean, flipped), descriptive; the conclusion reads the p-value.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel
from scipy import stats

from harmonycell.tools.evaluation.metrics import FALLBACK_METRIC, HIGHER_IS_BETTER, SEARCH_METRIC

ALPHA = 0.05
N_RESAMPLES = 9999
TEST_SEED = 0

Conclusion = Literal["better", "worse", "indistinguishable", "too few units", "not applicable"]
DECIDED = ("better", "worse", "indistinguishable")


class Comparison(BaseModel):
    """Model minus baseline on one metric, paired per query."""

    baseline: str
    metric: str
    n: int  # pairs where both values are defined
    n_undefined: int = 0  # pairs dropped because either value is undefined
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None = None  # two-sided exact sign-flip test
    p_holm: float | None = None  # Holm-adjusted over the baselines compared on this metric
    conclusion: Conclusion


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def sign_flip_p(diff: np.ndarray, seed: int = TEST_SEED) -> float:
    """Two-sided p-value of the sign-flip permutation test of mean(diff) = 0 (1 for a single pair:
    its two sign patterns are equally extreme; a held-out cell type alone is such a pair)."""
    if len(diff) < 2 or not np.any(diff):
        return 1.0
    res = stats.permutation_test((diff,), _mean, permutation_type="samples", vectorized=True,
                                 n_resamples=N_RESAMPLES, alternative="two-sided",
                                 random_state=np.random.default_rng(seed))
    return float(min(1.0, res.pvalue))


def sign_flip_interval(diff: np.ndarray, alpha: float = ALPHA, seed: int = TEST_SEED
                       ) -> tuple[float, float]:
    """(1 - alpha) interval of the mean: mean minus the sign-flip quantiles of the centred
    differences' mean."""
    m = float(diff.mean())
    res = stats.permutation_test((diff - m,), _mean, permutation_type="samples", vectorized=True,
                                 n_resamples=N_RESAMPLES, alternative="two-sided",
                                 random_state=np.random.default_rng(seed))
    lo, hi = np.quantile(res.null_distribution, [alpha / 2, 1 - alpha / 2])
    return m - float(hi), m - float(lo)


def min_p(n: int) -> float:
    """The smallest two-sided sign-flip p-value n pairs can give (every sign alike)."""
    return min(1.0, 2.0 ** (1 - n)) if n > 0 else 1.0


def holm(p: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error at most nominal)."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p)
    k = len(p)
    adj = np.maximum.accumulate((k - np.arange(k)) * p[order])
    out = np.empty(k)
    out[order] = np.minimum(adj, 1.0)
    return out.tolist()


def paired(model: Sequence[float | None], baseline: Sequence[float | None]) -> tuple[np.ndarray, int]:
    """(model - baseline over the pairs where both are defined, number of pairs dropped)."""
    if len(model) != len(baseline):
        raise ValueError(f"{len(model)} model values vs {len(baseline)} baseline values: not paired")
    a = np.array([np.nan if v is None else float(v) for v in model], dtype=np.float64)
    b = np.array([np.nan if v is None else float(v) for v in baseline], dtype=np.float64)
    ok = ~np.isnan(a) & ~np.isnan(b)
    return a[ok] - b[ok], int((~ok).sum())


def _raw(diff: np.ndarray, metric: str, baseline_name: str, dropped: int, seed: int) -> Comparison:
    diff = np.asarray(diff, dtype=np.float64)
    dropped += int(np.isnan(diff).sum())
    diff = diff[~np.isnan(diff)]
    n = int(len(diff))
    if n == 0:
        return Comparison(baseline=baseline_name, metric=metric, n=0, n_undefined=dropped,
                          mean_diff=None, ci_low=None, ci_high=None, conclusion="not applicable")
    lo = hi = None
    if n > 1:
        lo, hi = sign_flip_interval(diff, seed=seed)
    return Comparison(baseline=baseline_name, metric=metric, n=n, n_undefined=dropped,
                      mean_diff=float(diff.mean()), ci_low=lo, ci_high=hi,
                      p_value=sign_flip_p(diff, seed), conclusion="indistinguishable")


def decide(family: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Holm-correct the comparisons of one metric against several baselines and conclude."""
    tested = [c for c in family if c.p_value is not None]
    k = len(tested)
    for c, p in zip(tested, holm([c.p_value for c in tested]) if k else []):
        c.p_holm = p
        if k * min_p(c.n) > alpha:  # even all differences of one sign could not be significant
            c.conclusion = "too few units"
        elif p <= alpha and c.mean_diff != 0:
            good = (c.mean_diff > 0) == HIGHER_IS_BETTER[c.metric]
            c.conclusion = "better" if good else "worse"
        else:
            c.conclusion = "indistinguishable"
    return family


def compare(model: Sequence[float | None], baseline: Sequence[float | None], metric: str,
            baseline_name: str, seed: int = TEST_SEED) -> Comparison:
    """One paired comparison on its own (a family of one)."""
    diff, dropped = paired(model, baseline)
    return decide([_raw(diff, metric, baseline_name, dropped, seed)])[0]


def compare_diffs(diff: np.ndarray, metric: str, baseline_name: str, seed: int = TEST_SEED) -> Comparison:
    """Comparison from paired differences (model - baseline), one per independent unit; NaN =
    undefined (dropped)."""
    return decide([_raw(diff, metric, baseline_name, 0, seed)])[0]


def compare_family(diffs: dict[str, tuple[np.ndarray, int]], metric: str, seed: int = TEST_SEED
                   ) -> list[Comparison]:
    """Comparisons with several baselines on one metric, Holm-corrected together.
    ``diffs``: baseline -> (paired differences, pairs already dropped as undefined). A baseline
    on which the metric is undefined everywhere (no pair) is not applicable: it gets no
    comparison, so it neither counts in the correction nor decides anything."""
    raw = [_raw(d, metric, name, dropped, seed) for name, (d, dropped) in diffs.items()]
    return decide([c for c in raw if c.conclusion != "not applicable"])


# Descriptive only (the benches' spread of a pooled mean); never a conclusion: its percentile
# interval is anti-conservative at small n (bench/interval_calibration.py).
MIN_N = 3
N_BOOT = 2000


def bootstrap_mean_ci(values: np.ndarray, seed: int = TEST_SEED, n_boot: int = N_BOOT,
                      confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampling its entries)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(1)
    a = (1 - confidence) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def as_values(metric: str, values: Sequence[float | None]) -> np.ndarray:
    """Per-query values as floats, an undefined one as NaN (not applicable, never 0)."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


# Metrics compared against each baseline (the headline decides; the others are reported).
COMPARED_METRICS = (SEARCH_METRIC, FALLBACK_METRIC, "DeltaPCC", "RMSE")


def per_query(rows: Sequence[dict], metric: str) -> list[float | None]:
    """``metric`` of each per-perturbation row (``ScoreReport.per_perturbation`` dumped)."""
    return [r["metrics"].get(metric) for r in rows]


def compare_all(model_rows: Sequence[dict], baseline_rows: dict[str, Sequence[dict]],
                metrics: Sequence[str] = COMPARED_METRICS, seed: int = TEST_SEED) -> list[Comparison]:
    """Every (baseline, metric) comparison of the model's per-query rows with each baseline's,
    Holm-corrected per metric over the baselines."""
    for name, rows in baseline_rows.items():
        keys = [(r["condition"], r["context"]) for r in rows]
        if keys != [(r["condition"], r["context"]) for r in model_rows]:
            raise ValueError(f"baseline {name} was scored on other queries than the model")
    out = []
    for metric in metrics:
        out += compare_family({name: paired(per_query(model_rows, metric), per_query(rows, metric))
                               for name, rows in baseline_rows.items()}, metric, seed)
    return out


def deciding_metric(comparisons: Sequence[Comparison]) -> str:
    """The headline where any comparison on it applies, else its declared fallback (decided
    from the values, never from a baseline's name)."""
    on_headline = [c for c in comparisons if c.metric == SEARCH_METRIC]
    if any(c.conclusion != "not applicable" for c in on_headline):
        return SEARCH_METRIC
    return FALLBACK_METRIC if any(c.metric == FALLBACK_METRIC for c in comparisons) else SEARCH_METRIC


def usefulness(comparisons: Sequence[Comparison], metric: str | None = None
               ) -> tuple[bool, dict[str, Comparison]]:
    """(useful, the deciding comparison per baseline) -- the one rule the Judge and
    ``harmonycell score --compare`` share: useful means ``better`` on the headline (or, where
    it is undefined everywhere, its fallback: ``deciding_metric``) than every baseline it
    applies to (a baseline whose value is undefined everywhere is "not applicable": listed,
    not counted), with at least one baseline applying."""
    metric = metric or deciding_metric(comparisons)
    deciding = {c.baseline: c for c in comparisons if c.metric == metric}
    applies = [c for c in deciding.values() if c.conclusion != "not applicable"]
    return bool(applies) and all(c.conclusion == "better" for c in applies), deciding
