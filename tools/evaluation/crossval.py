"""Pooling repeated K-fold cross-validation (SPEC section 7): every held-out unit is tested once
per repeat, by a model whose search never saw it.

Each fold contributes, per test query, the model's and every baseline's per-query metrics
(computed on that fold's own split). Paired differences are first averaged per query over every
fold and repeat that tested it (a query tested R times, or in two folds as a Norman pair can be,
is one unit, not several independent ones), then compared with ``compare``'s exact sign-flip
test, Holm-corrected over the baselines. An undefined value is dropped, never counted as 0.
Per metric, the spread across folds is reported as mean ± sd of the fold aggregates.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field

from harmonycell.tools.evaluation.ceiling import NOISE_CEILING
from harmonycell.tools.evaluation.compare import (
    COMPARED_METRICS,
    TEST_SEED,
    Comparison,
    compare_family,
)


class FoldResult(BaseModel):
    """One outer fold of one repeat: per-query rows (``PerturbationScore`` dumps)."""

    repeat: int
    fold: int
    valid: bool = True
    model_rows: list[dict] = Field(default_factory=list)  # empty: no model trained in this fold
    baseline_rows: dict[str, list[dict]] = Field(default_factory=dict)
    # the fold's noise ceiling (aggregate per metric): shown beside the predictors, never compared
    ceiling: dict[str, float | None] = Field(default_factory=dict)
    note: str = ""


class MetricSpread(BaseModel):
    mean: float | None
    sd: float | None
    n_folds: int


class CVSummary(BaseModel):
    folds: int
    repeats: int
    n_queries: int  # distinct test queries (each tested once per repeat)
    spread: dict[str, dict[str, MetricSpread]]  # predictor -> metric -> across-fold spread
    comparisons: list[Comparison]


def _key(row: dict) -> tuple[str, str]:
    return row["condition"], row["context"]


def fold_mean(rows: Sequence[dict], metric: str) -> float | None:
    """Mean over the fold's queries where ``metric`` is defined; None when it is defined on none
    (e.g. DeltaPCC of control_mean)."""
    vals = np.array([v for v in (r["metrics"].get(metric) for r in rows) if v is not None],
                    dtype=np.float64)
    return float(vals.mean()) if len(vals) else None


def spread(values: list[float | None]) -> MetricSpread:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    return MetricSpread(mean=float(v.mean()) if len(v) else None,
                        sd=float(v.std(ddof=1)) if len(v) > 1 else None, n_folds=int(len(v)))


def unit_diffs(folds: Sequence[FoldResult], baseline: str, metric: str) -> np.ndarray:
    """Model - baseline per distinct query, averaged over every fold and repeat that tested it
    (NaN where it is undefined in all of them)."""
    per_key: dict[tuple[str, str], list[float]] = defaultdict(list)
    for f in folds:
        if not f.model_rows or baseline not in f.baseline_rows:
            continue
        base = {_key(r): r for r in f.baseline_rows[baseline]}
        for r in f.model_rows:
            a, b = r["metrics"].get(metric), base[_key(r)]["metrics"].get(metric)
            per_key[_key(r)].append(np.nan if a is None or b is None else a - b)
    with np.errstate(all="ignore"):
        return np.array([np.nan if np.isnan(v).all() else np.nanmean(v) for v in map(np.array, per_key.values())])


def pooled_comparisons(folds: Sequence[FoldResult], metrics: Sequence[str] = COMPARED_METRICS,
                       seed: int = TEST_SEED) -> list[Comparison]:
    baselines = sorted({b for f in folds for b in f.baseline_rows})
    out = []
    for metric in metrics:
        out += compare_family({name: (unit_diffs(folds, name, metric), 0) for name in baselines},
                              metric, seed)
    return out


def summarise(folds: Sequence[FoldResult], n_folds: int, repeats: int,
              metrics: Sequence[str] = COMPARED_METRICS) -> CVSummary:
    predictors = ["model"] + sorted({b for f in folds for b in f.baseline_rows})
    table: dict[str, dict[str, MetricSpread]] = {}
    for p in predictors:
        table[p] = {}
        for m in metrics:
            vals = []
            for f in folds:
                rows = f.model_rows if p == "model" else f.baseline_rows.get(p, [])
                if rows:
                    vals.append(fold_mean(rows, m))
            table[p][m] = spread(vals)
    if any(f.ceiling for f in folds):
        table[NOISE_CEILING] = {m: spread([f.ceiling.get(m) for f in folds if f.ceiling]) for m in metrics}
    keys = {_key(r) for f in folds for r in f.model_rows}
    return CVSummary(folds=n_folds, repeats=repeats, n_queries=len(keys), spread=table,
                     comparisons=pooled_comparisons(folds, metrics))
