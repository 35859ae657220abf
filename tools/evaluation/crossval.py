"""Pooling repeated K-fold cross-validation (SPEC section 7): every held-out unit is tested once
per repeat, by a model whose search never saw it.

Each fold contributes, per test query, the model's and every baseline's per-query metrics
(computed on that fold's own split). Paired differences are first averaged per query over the
repeats (a query tested R times is one unit, not R independent ones), then compared with the
seeded bootstrap of ``compare``. Per metric, the spread across folds is reported as mean ± sd of
the fold aggregates.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field

from harmonycell.tools.evaluation.compare import (
    BOOT_SEED,
    COMPARED_METRICS,
    UNDEFINED_FOR,
    Comparison,
    as_values,
    compare_diffs,
)


class FoldResult(BaseModel):
    """One outer fold of one repeat: per-query rows (``PerturbationScore`` dumps)."""

    repeat: int
    fold: int
    valid: bool = True
    model_rows: list[dict] = Field(default_factory=list)  # empty: no model trained in this fold
    baseline_rows: dict[str, list[dict]] = Field(default_factory=dict)
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
    """Mean over the fold's queries (an undefined correlation counts as 0, as in comparisons);
    None when the metric is undefined on every query (e.g. DeltaPCC of control_mean)."""
    raw = [r["metrics"].get(metric) for r in rows]
    if all(v is None for v in raw):
        return None
    vals = as_values(metric, raw)
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if len(vals) else None


def spread(values: list[float | None]) -> MetricSpread:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    return MetricSpread(mean=float(v.mean()) if len(v) else None,
                        sd=float(v.std(ddof=1)) if len(v) > 1 else None, n_folds=int(len(v)))


def pooled_comparisons(folds: Sequence[FoldResult], metrics: Sequence[str] = COMPARED_METRICS,
                       seed: int = BOOT_SEED) -> list[Comparison]:
    baselines = sorted({b for f in folds for b in f.baseline_rows})
    out = []
    for name in baselines:
        for metric in metrics:
            if metric in UNDEFINED_FOR.get(name, set()):
                continue
            per_key: dict[tuple[str, str], list[float]] = defaultdict(list)
            for f in folds:
                if not f.model_rows or name not in f.baseline_rows:
                    continue
                base = {_key(r): r for r in f.baseline_rows[name]}
                for r in f.model_rows:
                    b = base[_key(r)]
                    d = (as_values(metric, [r["metrics"].get(metric)])
                         - as_values(metric, [b["metrics"].get(metric)]))[0]
                    per_key[_key(r)].append(d)
            diffs = np.array([np.nanmean(v) for v in per_key.values()]) if per_key else np.zeros(0)
            out.append(compare_diffs(diffs, metric, name, seed))
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
    keys = {_key(r) for f in folds for r in f.model_rows}
    return CVSummary(folds=n_folds, repeats=repeats, n_queries=len(keys), spread=table,
                     comparisons=pooled_comparisons(folds, metrics))
