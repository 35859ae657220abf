"""Pseudo-bulk targets of a split: the exact numbers every prediction is scored against.

Definitions (SPEC section 7):
- a *context* is a (``dataset_id``, ``cell_type``) group (``taskdata.context_labels``);
- a *query* is a held-out (condition, context) pair of the split, in ``taskdata.queries_for``
  order (the order the sandbox writes its prediction rows in);
- ``y[q]`` = mean expression of the split's cells of that condition in that context;
- ``y_ctrl[q]`` = mean of *all* control cells of the query's context, whatever split they were
  assigned to. Controls are inputs, never targets: the sandbox sees every one of them, so the
  reference an effect is measured against uses all of them (hundreds of cells, not the test
  split's sliver of a few dozen). ``ctrl_source`` is "all" per query;
- ``y_ctrl_train[q]`` = mean of the training control cells of the context (same fallbacks);
- ``pert_mean_train[q]`` = mean of all *perturbed training cells* of the context (cell-weighted).
  It is the reference of the shift-corrected PearsonDelta: deltas against it no longer contain
  the shift every perturbation shares. When the context has no perturbed training cell (unseen
  cell context), it is ``y_ctrl[q]`` plus the average training shift (per training context: mean
  perturbed training cell minus mean training control cell; averaged over those contexts);
  ``pert_mean_source`` says which.

All means are sparse-indicator matrix products (groups x cells) @ X: no Python loop over cells
or genes, and X may be dense or scipy sparse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from harmonycell.tools.errors import InputError
from harmonycell.tools.schema import SPLIT, SPLITS, split_condition
from harmonycell.tools.data.genes import gene_lookup as _gene_lookup
from harmonycell.tools.data.taskdata import Query, context_labels, queries_for


@dataclass
class Targets:
    split: str
    queries: list[Query]
    genes: list[str]
    y: np.ndarray  # (Q, G) true pseudo-bulk of each query
    y_ctrl: np.ndarray  # (Q, G) mean of all control cells of the query's context
    y_ctrl_train: np.ndarray  # (Q, G) training control mean of the query's context
    pert_mean_train: np.ndarray  # (Q, G) mean of perturbed training cells (shift reference)
    n_cells: np.ndarray  # (Q,) cells behind each y
    n_ctrl: np.ndarray  # (Q,) control cells behind each y_ctrl
    contexts: list[str]  # distinct contexts, sorted
    query_context: np.ndarray  # (Q,) index into contexts
    target_genes: list[list[int]] = field(default_factory=list)  # measured perturbed genes per query
    ctrl_source: list[str] = field(default_factory=list)  # "all" per query (all controls of the context)
    pert_mean_source: list[str] = field(default_factory=list)  # "context" | "pooled" per query

    @property
    def conditions(self) -> list[str]:
        return [q.condition for q in self.queries]


def stacked_group_means(X, code_sets: list[tuple[np.ndarray, int]]
                        ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group means for several groupings in one pass over X.

    ``code_sets`` is a list of (codes, n_groups): ``codes[i]`` is cell i's group in that grouping,
    -1 leaves it out; a cell may belong to a group of every grouping. Returns per grouping
    (means (n_groups, G) float64, counts (n_groups,)); a group without cells is NaN.
    """
    offsets = np.cumsum([0] + [n for _, n in code_sets])
    rows, cols = [], []
    for (codes, _), off in zip(code_sets, offsets):
        codes = np.asarray(codes)
        keep = np.flatnonzero(codes >= 0)
        rows.append(codes[keep].astype(np.int64) + off)
        cols.append(keep)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    counts = np.bincount(rows, minlength=offsets[-1]).astype(np.int64)
    # Sum with unit weights in X's own precision (no float64 copy of X), divide afterwards.
    dtype = np.float64 if X.dtype == np.float64 else np.float32
    ind = sp.csr_matrix((np.ones(len(rows), dtype=dtype), (rows, cols)),
                        shape=(int(offsets[-1]), X.shape[0]))
    sums = ind @ X
    sums = np.asarray(sums.toarray() if sp.issparse(sums) else sums, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    return [(means[offsets[i]:offsets[i + 1]], counts[offsets[i]:offsets[i + 1]])
            for i in range(len(code_sets))]


def group_means(X, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean row of X per group; ``codes[i]`` is cell i's group, -1 leaves it out."""
    return stacked_group_means(X, [(codes, n_groups)])[0]


def gene_lookup(adata: AnnData) -> dict[str, int]:
    """Upper-cased gene id and gene symbol -> column, for finding a perturbed gene's own row."""
    return _gene_lookup(adata.var, adata.var_names)


def measured_genes(condition: str, lookup: dict[str, int]) -> list[int]:
    return [lookup[p.upper()] for p in split_condition(condition) if p.upper() in lookup]


def _check(adata: AnnData, split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}", fix=f"use one of {', '.join(SPLITS)}")
    missing = [c for c in (SPLIT, "is_control", "condition_name", "dataset_id", "cell_type")
               if c not in adata.obs]
    if missing:
        raise InputError(f"obs lacks {', '.join(missing)}", where="unified.h5ad",
                         fix="score a task made by `harmonycell unify --task`")


def control_code_sets(adata: AnnData, ctx_code: np.ndarray, split: str) -> list[np.ndarray]:
    """Context codes of the control cells of ``split``, of train, and of every split."""
    is_ctrl = adata.obs["is_control"].astype(bool).to_numpy()
    splits = adata.obs[SPLIT].astype(str).to_numpy()
    return [np.where(sel, ctx_code, -1) for sel in
            (is_ctrl & (splits == split), is_ctrl & (splits == "train"), is_ctrl)]


def first_available(results: list[tuple[np.ndarray, np.ndarray]], names: list[str]
                    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per group, the first grouping in ``results`` that has cells there (a fallback chain)."""
    out = np.full_like(results[0][0], np.nan)
    counts = np.zeros(len(out), dtype=np.int64)
    source = [""] * len(out)
    for (m, n), name in zip(results, names):
        fill = (counts == 0) & (n > 0)
        out[fill], counts[fill] = m[fill], n[fill]
        for i in np.flatnonzero(fill):  # groups (contexts)
            source[i] = name
    return out, counts, source


def targets_for(adata: AnnData, split: str) -> Targets:
    """The pseudo-bulk targets of ``split`` (see the module docstring for every definition)."""
    _check(adata, split)
    obs = adata.obs
    queries = queries_for(adata, split)
    if not queries:
        raise InputError(f"split {split!r} has no perturbed cells to score", where="obs['split']",
                         fix="re-run `harmonycell unify --task` so the split holds perturbations")
    ctx = context_labels(obs).to_numpy()
    contexts = sorted(set(ctx))
    ctx_index = {c: i for i, c in enumerate(contexts)}
    ctx_code = pd.Categorical(ctx, categories=contexts).codes.astype(np.int64)
    is_ctrl = obs["is_control"].astype(bool).to_numpy()
    splits = obs[SPLIT].astype(str).to_numpy()

    # One group per query: (condition, context) of the split's perturbed cells.
    # Integer pair codes (condition code * n_contexts + context code) looked up in a table.
    cond_codes, cond_names = pd.factorize(obs["condition_name"].astype(str).to_numpy())
    cond_index = {c: i for i, c in enumerate(cond_names)}
    table = np.full(len(cond_names) * len(contexts), -1, dtype=np.int64)
    for i, q in enumerate(queries):
        table[cond_index[q.condition] * len(contexts) + ctx_index[q.context]] = i
    sel = (splits == split) & ~is_ctrl
    codes = np.where(sel, table[cond_codes * len(contexts) + ctx_code], -1)
    ctrl_sets = control_code_sets(adata, ctx_code, split)
    train_pert = (splits == "train") & ~is_ctrl
    n_ctx = len(contexts)
    (y, n_cells), *ctrl_res, (pm, n_pm) = stacked_group_means(  # one pass over X
        adata.X, [(codes, len(queries))] + [(c, n_ctx) for c in ctrl_sets]
        + [(np.where(train_pert, ctx_code, -1), n_ctx)])

    qctx = np.array([ctx_index[q.context] for q in queries], dtype=np.int64)
    ctrl, n_ctrl, ctrl_src = first_available(ctrl_res[2:], ["all"])  # controls are references
    ctrl_tr, _, _ = first_available(ctrl_res[1:], ["train", "all"])
    lacking = [contexts[i] for i in set(qctx.tolist()) if n_ctrl[i] == 0]
    if lacking:
        raise InputError(f"no control cells in context {', '.join(lacking)}",
                         where="obs['is_control']",
                         fix="a perturbation effect needs control cells of the same dataset and cell type")

    pm_src = ["context"] * len(contexts)
    if (n_pm == 0).any():
        # Unseen context: the context's own control mean plus the average training shift,
        # contexts weighted equally (so a single perturbation seen in several contexts maps
        # onto exactly the train-mean baseline's prediction, which then scores null).
        seen = np.flatnonzero((n_pm > 0) & ~np.isnan(ctrl).any(1))
        shift = (pm[seen] - ctrl[seen]).mean(0) if len(seen) else np.zeros(adata.n_vars)
        for i in np.flatnonzero(n_pm == 0):
            pm[i] = ctrl[i] + shift
            pm_src[i] = "pooled"

    lookup = gene_lookup(adata)
    return Targets(
        split=split,
        queries=queries,
        genes=[str(g) for g in adata.var_names],
        y=y,
        y_ctrl=ctrl[qctx],
        y_ctrl_train=np.where(np.isnan(ctrl_tr[qctx]), ctrl[qctx], ctrl_tr[qctx]),
        pert_mean_train=pm[qctx],
        n_cells=n_cells,
        n_ctrl=n_ctrl[qctx],
        contexts=contexts,
        query_context=qctx,
        target_genes=[measured_genes(q.condition, lookup) for q in queries],
        ctrl_source=[ctrl_src[i] for i in qctx],
        pert_mean_source=[pm_src[i] for i in qctx],
    )
