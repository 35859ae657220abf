"""Baselines every result stands beside (SPEC section 7), on the same split, queries and genes.

All baselines predict ``y^_q = y_ctrl[q] + delta^_q`` where ``y_ctrl[q]`` is the control mean of
the query's context in the scored split (as in ``pseudobulk.Targets``), and are fitted on
training cells only:

- ``control_mean``: ``delta^ = 0``. Correlations are undefined (null); its RMSE is the RMS of
  the true effect, the floor any model must beat.
- ``train_mean``: ``delta^`` = mean over training perturbations q of the context of
  ``y_q(train) - y_ctrl(train)`` (perturbation-weighted). A context with no training perturbation
  (unseen cell context) uses the mean over all training (perturbation, context) pairs. Its
  DeltaPCC is the shared-shift artefact (SPEC: 0.49-0.56 on Norman, 0.70-0.74 on Adamson).
- ``linear``: Ahlmann-Eltze et al. (Nature Methods 2025). With D the genes x perturbations
  matrix of training deltas of the context, b its row means, G the top K = 10 principal
  components of D (left singular vectors of D - b), and P the perturbations' embeddings = the
  rows of G of the perturbed genes (summed over the genes of a combination):
  ``W = (G'G + lambda I)^-1 G' (D - b) P (P'P + lambda I)^-1``, lambda = 0.1, and
  ``delta^_q = G W p_q + b``. A context with fewer than two training perturbations on measured
  genes is fitted on all contexts' deltas pooled. A query none of whose genes is measured (a
  drug, a cytokine, a gene outside the task's genes) falls back to ``train_mean``; how often is
  reported in ``fallbacks``.
- ``additive`` (only when combinations are held out): ``delta^_{A+B} = delta_A(train) +
  delta_B(train)`` from the singles of the same context; a query that is not a combination or
  whose singles were not all seen in training falls back to ``train_mean`` (counted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import BaseModel, Field

from harmonycell.tools.evaluation.metrics import DEFINITIONS, score
from harmonycell.tools.evaluation.pseudobulk import (
    Targets,
    control_code_sets,
    first_available,
    gene_lookup,
    measured_genes,
    stacked_group_means,
    targets_for,
)
from harmonycell.tools.schema import SPLIT, split_condition
from harmonycell.tools.data.taskdata import context_labels

LINEAR_K = 10
LINEAR_LAMBDA = 0.1


class Fallback(BaseModel):
    n: int
    of: int
    conditions: list[str]
    why: str


class BaselinesReport(BaseModel):
    split: str
    test_conditions: list[str]
    n_queries: int
    n_genes: int
    contexts: list[str]
    control_cells: dict[str, int]  # control cells behind y_ctrl, per context
    baselines: dict[str, dict[str, float | None]]
    null_counts: dict[str, dict[str, int]]
    per_context: dict[str, dict[str, dict[str, float | None]]]
    fallbacks: dict[str, Fallback]
    definitions: dict[str, str] = Field(default_factory=lambda: dict(DEFINITIONS))
    baseline_definitions: dict[str, str] = Field(default_factory=dict)


BASELINE_DEFINITIONS = {
    "control_mean": "y^ = control mean of the context in the scored split (no effect).",
    "train_mean": "y^ = control mean + mean over training perturbations of their effect "
                  "(y_q(train) - y_ctrl(train)) in the same context.",
    "linear": f"Ahlmann-Eltze linear model: K={LINEAR_K} PCs of training pseudo-bulk deltas, "
              f"ridge lambda={LINEAR_LAMBDA}, the perturbed gene's own row of the PCs as its "
              "embedding; train_mean where the gene is not measured.",
    "additive": "y^_{A+B} = control mean + effect of A + effect of B, singles seen in training.",
}


class TrainEffects:
    """Training pseudo-bulk effects: one row per (condition, context) of perturbed train cells."""

    def __init__(self, adata: AnnData, contexts: list[str]):
        obs = adata.obs
        ctx = pd.Categorical(context_labels(obs).to_numpy(), categories=contexts)
        ctx_code = ctx.codes.astype(np.int64)
        train = (obs[SPLIT].astype(str) == "train").to_numpy() & ~obs["is_control"].astype(bool).to_numpy()
        cond_codes, cond_names = pd.factorize(obs["condition_name"].astype(str).to_numpy())
        pair = cond_codes.astype(np.int64) * len(contexts) + ctx_code
        groups, inverse = np.unique(pair[train], return_inverse=True)
        codes = np.full(len(pair), -1, dtype=np.int64)
        codes[train] = inverse
        ctrl_sets = control_code_sets(adata, ctx_code, "train")
        (means, _), *ctrl_res = stacked_group_means(  # one pass over X
            adata.X, [(codes, len(groups))] + [(c, len(contexts)) for c in ctrl_sets])
        ctrl_train = first_available(ctrl_res[1:], ["train", "all"])[0]
        self.conditions = [str(cond_names[g // len(contexts)]) for g in groups]
        self.context = (groups % len(contexts)).astype(np.int64)
        self.delta = means - ctrl_train[self.context]  # (T, G)
        self.n_contexts = len(contexts)

    def rows(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.context == c)

    def mean_shift(self, c: int) -> np.ndarray:
        rows = self.rows(c)
        if len(rows) == 0:
            rows = np.arange(len(self.conditions))
        if len(rows) == 0:
            return np.zeros(self.delta.shape[1])
        return self.delta[rows].mean(0)


def _train_mean(t: Targets, eff: TrainEffects) -> np.ndarray:
    shifts = np.stack([eff.mean_shift(c) for c in range(eff.n_contexts)])
    return t.y_ctrl + shifts[t.query_context]


def top_left_singular(A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k left singular vectors and values of A (genes x perturbations), from the
    eigendecomposition of the smaller Gram matrix (much faster than a thin SVD here);
    directions with a singular value ~0 are dropped."""
    small = A.shape[1] <= A.shape[0]
    w, V = np.linalg.eigh(A.T @ A if small else A @ A.T)
    order = np.argsort(w)[::-1][:k]
    s = np.sqrt(np.maximum(w[order], 0.0))
    keep = s > 1e-8 * max(s.max(initial=0.0), 1e-300)
    s, order = s[keep], order[keep]
    return ((A @ V[:, order]) / s if small else V[:, order]), s


def fit_linear(D: np.ndarray, P_genes: list[list[int]], k: int = LINEAR_K, lam: float = LINEAR_LAMBDA):
    """Fit the Ahlmann-Eltze model on training deltas D (T perturbations x G genes).

    Returns (G_pcs (G, K), W (K, K), b (G,)) or None when fewer than two training perturbations
    have a measured gene."""
    usable = [i for i, g in enumerate(P_genes) if g]
    if len(usable) < 2:
        return None
    b = D.mean(0)
    Dc = (D - b).T  # genes x perturbations
    u, s = top_left_singular(Dc, k)
    k = len(s)
    if k < 1:
        return None
    G = u[:, :k]
    P = np.stack([G[P_genes[i]].sum(0) for i in usable])  # (T_used, K)
    Y = Dc[:, usable]
    W = np.linalg.solve(G.T @ G + lam * np.eye(k), G.T @ Y @ P) @ np.linalg.inv(P.T @ P + lam * np.eye(k))
    return G, W, b


NO_GENE = "the perturbed gene is not among the task's genes (or it is a drug or cytokine)"
NO_FIT = "fewer than two training perturbations on measured genes to fit"


def _linear(t: Targets, eff: TrainEffects, adata: AnnData, fallback: np.ndarray
            ) -> tuple[np.ndarray, Fallback]:
    lookup = gene_lookup(adata)
    train_genes = [measured_genes(c, lookup) for c in eff.conditions]
    pooled: tuple | None = None
    pooled_tried = False
    pred = fallback.copy()
    fell: dict[str, str] = {}
    n = 0
    for c in np.unique(t.query_context):  # contexts
        rows = eff.rows(c)
        model = fit_linear(eff.delta[rows], [train_genes[i] for i in rows]) if len(rows) >= 2 else None
        if model is None:  # too little in this context: fit on all contexts' deltas
            if not pooled_tried:
                pooled, pooled_tried = fit_linear(eff.delta, train_genes), True
            model = pooled
        for q in np.flatnonzero(t.query_context == c):  # queries
            genes = t.target_genes[q]
            if model is None or not genes:
                fell[t.queries[q].condition] = NO_GENE if not genes else NO_FIT
                n += 1
                continue
            G, W, b = model
            pred[q] = t.y_ctrl[q] + G @ (W @ G[genes].sum(0)) + b
    return pred, Fallback(n=n, of=len(t.queries), conditions=sorted(fell),
                          why="; ".join(sorted(set(fell.values()))) or "none")


def _additive(t: Targets, eff: TrainEffects, fallback: np.ndarray) -> tuple[np.ndarray, Fallback]:
    index = {(cond, int(c)): i for i, (cond, c) in enumerate(zip(eff.conditions, eff.context))}
    pred = fallback.copy()
    fell = []
    for q, query in enumerate(t.queries):  # queries
        parts = split_condition(query.condition)
        rows = [index.get((p, int(t.query_context[q]))) for p in parts]
        if len(parts) < 2 or any(r is None for r in rows):
            fell.append(query.condition)
            continue
        pred[q] = t.y_ctrl[q] + eff.delta[rows].sum(0)
    return pred, Fallback(n=len(fell), of=len(t.queries), conditions=sorted(set(fell)),
                          why="not a combination, or a single of it not seen in training in this context")


def has_combinations(t: Targets) -> bool:
    return any(len(split_condition(q.condition)) > 1 for q in t.queries)


def _all(adata: AnnData, split: str, t: Targets | None = None
         ) -> tuple[Targets, dict[str, np.ndarray], dict[str, Fallback]]:
    t = t or targets_for(adata, split)
    eff = TrainEffects(adata, t.contexts)
    tm = _train_mean(t, eff)
    preds = {"control_mean": t.y_ctrl.copy(), "train_mean": tm}
    fallbacks = {}
    preds["linear"], fallbacks["linear"] = _linear(t, eff, adata, tm)
    if has_combinations(t):
        preds["additive"], fallbacks["additive"] = _additive(t, eff, tm)
    return t, preds, fallbacks


def baseline_predictions(adata: AnnData, split: str) -> dict[str, np.ndarray]:
    """(Q, G) predictions of every baseline, rows in ``targets_for(adata, split)`` query order."""
    return _all(adata, split)[1]


def compute_baselines(adata: AnnData, split: str = "test") -> BaselinesReport:
    t, preds, fallbacks = _all(adata, split)
    reports = {name: score(t, p) for name, p in preds.items()}
    return BaselinesReport(
        split=split,
        test_conditions=sorted({q.condition for q in t.queries}),
        n_queries=len(t.queries),
        n_genes=len(t.genes),
        contexts=sorted({q.context for q in t.queries}),
        control_cells={q.context: int(n) for q, n in zip(t.queries, t.n_ctrl)},
        baselines={n: r.aggregate for n, r in reports.items()},
        null_counts={n: r.null_counts for n, r in reports.items()},
        per_context={n: r.per_context for n, r in reports.items()},
        fallbacks=fallbacks,
        baseline_definitions={n: BASELINE_DEFINITIONS[n] for n in preds},
    )
