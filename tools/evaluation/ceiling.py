"""The noise ceiling: a positive control for every metric (SPEC section 7, Miller et al. 2025).

Each held-out query's cells are split at random into two halves; the mean of one half is
scored as a "prediction" against the mean of the other half as the truth (controls, genes and
pools unchanged). It is what a model that knew the true effect could reach given the finite
cells behind each target: a metric that cannot separate it from the negative controls
(control mean, train mean) cannot judge a model either, and a dataset whose ceiling sits near
chance holds little predictable signal. Host side only: it reads held-out cells.

Queries with a single cell cannot be split: their half-B truth is the cell itself and their
half-A prediction is the context's control mean (no information), so the ceiling is never
flattered by them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from anndata import AnnData

from harmonycell.tools.evaluation.metrics import ScoreReport, score
from harmonycell.tools.evaluation.pseudobulk import Targets, group_means, targets_for
from harmonycell.tools.schema import SPLIT
from harmonycell.tools.data.taskdata import context_labels

NOISE_CEILING = "noise_ceiling"
CEILING_SEED = 0
CEILING_DEFINITION = ("positive control: the mean of a random half of each held-out query's "
                      "cells, scored against the mean of the other half (a technical duplicate); "
                      "not a baseline to beat, the best a model can reach with these cells.")


def split_half(adata: AnnData, split: str, targets: Targets | None = None,
               seed: int = CEILING_SEED) -> tuple[Targets, np.ndarray]:
    """(targets whose truth is half B of each query's cells, the half-A means as predictions)."""
    t = targets if targets is not None else targets_for(adata, split)
    obs = adata.obs
    index = {(q.condition, q.context): i for i, q in enumerate(t.queries)}
    is_ctrl = obs["is_control"].astype(bool).to_numpy()
    in_split = (obs[SPLIT].astype(str).to_numpy() == split) & ~is_ctrl
    keys = zip(obs["condition_name"].astype(str).to_numpy(), context_labels(obs).to_numpy())
    codes = np.array([index.get(k, -1) if s else -1 for k, s in zip(keys, in_split)], dtype=np.int64)
    rng = np.random.default_rng(seed)
    half = np.zeros(len(codes), dtype=bool)  # True: half A
    for q in range(len(t.queries)):  # queries: a balanced random half of each one's cells
        cells = np.flatnonzero(codes == q)
        half[rng.permutation(cells)[: len(cells) // 2]] = True
    a, n_a = group_means(adata.X, np.where(half, codes, -1), len(t.queries))
    b, n_b = group_means(adata.X, np.where(half, -1, codes), len(t.queries))
    a = np.where((n_a > 0)[:, None], a, t.y_ctrl)
    b = np.where((n_b > 0)[:, None], b, t.y)
    return replace(t, y=b, n_cells=n_b), a


def noise_ceiling(adata: AnnData, split: str, targets: Targets | None = None,
                  seed: int = CEILING_SEED) -> ScoreReport:
    """Every metric of the split-half positive control on ``split``'s held-out queries."""
    half_b, half_a = split_half(adata, split, targets, seed)
    return score(half_b, half_a)

