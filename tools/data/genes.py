"""Which genes a task keeps, chosen without looking at held-out cells (SPEC sections 2 and 7).

Runs after the split: highly variable genes are ranked on the training cells only (training
perturbed cells plus the controls assigned to training), so a gene that varies only inside a
held-out condition cannot enter the task because of that condition. Every perturbed gene the
input measures is kept whatever its variance (its own knock-down is part of the effect); that
rule reads perturbation *names*, never expression, so it leaks nothing.

Also here: the perturbation embedding of the linear baseline (Ahlmann-Eltze et al. 2025), taken
from the training expression over *all* measured genes before selection, so the baseline is
defined for every measured perturbed gene, selected or not.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from harmonycell.tools.schema import SPLIT, UNS_PERTS, VAR_SYMBOL, split_condition

UNS_GENE_SELECTION = "gene_selection"
UNS_PERT_EMBEDDING = "pert_gene_embedding"
EMBEDDING_K = 10

HVG_RULE = ("top {n} highly variable genes (scanpy seurat flavour{batch}) ranked on the training "
            "split's cells only (training perturbed cells + training controls), plus every "
            "perturbed gene the input measures")
ALL_CELLS_RULE = ("top {n} highly variable genes (scanpy seurat flavour{batch}) over all cells: "
                  "no task, so nothing is held out")


def gene_lookup(var: pd.DataFrame, var_names) -> dict[str, int]:
    """Upper-cased gene id and gene symbol -> column, for finding a perturbed gene's own column."""
    ids = pd.Index(var_names).astype(str)
    symbols = var[VAR_SYMBOL].astype(str) if VAR_SYMBOL in var else ids
    index: dict[str, int] = {}
    for i, (gid, sym) in enumerate(zip(ids, symbols)):  # genes, once per task
        index.setdefault(str(sym).upper(), i)
        index.setdefault(str(gid).upper(), i)
    return index


def perturbed_gene_columns(adata: AnnData) -> dict[str, int]:
    """Single perturbations of the vocabulary that are measured genes -> their column."""
    lookup = gene_lookup(adata.var, adata.var_names)
    perts = adata.uns.get(UNS_PERTS)
    if perts is None:
        perts = sorted({p for c in adata.obs["condition_name"].astype(str).unique() for p in split_condition(c)})
    return {str(p): lookup[str(p).upper()] for p in perts if str(p).upper() in lookup}


def hvg_mask(adata: AnnData, rows: np.ndarray, n_top: int) -> np.ndarray:
    """Highly variable genes ranked on ``rows`` only (a boolean mask over all genes)."""
    import scanpy as sc

    every = len(rows) == adata.n_obs  # no split: X itself (scanpy's seurat flavour copies it anyway)
    sub = AnnData(X=adata.X if every else adata.X[rows],
                  obs=(adata.obs if every else adata.obs.iloc[rows])[["dataset_id"]].copy(),
                  var=pd.DataFrame(index=adata.var_names.astype(str)))
    batch = "dataset_id" if sub.obs["dataset_id"].nunique() > 1 else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(sub, n_top_genes=n_top, flavor="seurat", batch_key=batch)
    return sub.var["highly_variable"].to_numpy(bool)


def select_task_genes(adata: AnnData, n_hvg: int) -> tuple[AnnData, dict]:
    """Subset ``adata`` to its task genes; returns (subset, record of the rule and the result).

    With ``obs['split']`` the variance is measured on training cells only; without it (no task,
    nothing held out) on all cells."""
    has_split = SPLIT in adata.obs
    batch = ", per dataset" if adata.obs["dataset_id"].nunique() > 1 else ""
    pert_cols = perturbed_gene_columns(adata)
    record = {"n_measured": int(adata.n_vars), "n_hvg": int(min(n_hvg, adata.n_vars)),
              "rule": (HVG_RULE if has_split else ALL_CELLS_RULE).format(n=n_hvg, batch=batch)}
    if adata.n_vars <= n_hvg:
        keep = np.ones(adata.n_vars, bool)
        record["rule"] = f"all {adata.n_vars} measured genes (no more than {n_hvg})"
    else:
        rows = (np.flatnonzero(adata.obs[SPLIT].astype(str).to_numpy() == "train") if has_split
                else np.arange(adata.n_obs))
        keep = hvg_mask(adata, rows, n_hvg)
        if has_split:
            keep[list(pert_cols.values())] = True
    added = sorted(p for p, j in pert_cols.items() if keep[j])
    record["perturbed_genes_kept"] = added
    record["n_genes"] = int(keep.sum())
    out = adata[:, keep].copy() if not keep.all() else adata
    return out, record


def perturbation_embedding(adata: AnnData, k: int = EMBEDDING_K) -> dict:
    """Per measured perturbed gene: its row of the top-k principal components (left singular
    vectors, genes x k) of the training pseudo-bulk over all measured genes: Ahlmann-Eltze's P.
    The pseudo-bulk has one row per training (condition, context) group, controls included
    (each context's control cells are a group), centred per gene; held-out cells never enter."""
    obs = adata.obs
    train = ((obs[SPLIT].astype(str) == "train").to_numpy() if SPLIT in obs
             else np.ones(len(obs), bool))
    ctx = (obs["dataset_id"].astype(str) + "|" + obs["cell_type"].astype(str)).to_numpy()
    group = obs["condition_name"].astype(str).to_numpy() + "@" + ctx
    codes, names = pd.factorize(group[train])
    rows = np.flatnonzero(train)
    cols = perturbed_gene_columns(adata)
    empty = {"perts": [], "vectors": np.zeros((0, k), np.float32), "k": 0,
             "rule": "fewer than 2 training groups or no measured perturbed gene: no embedding"}
    if len(names) < 2 or not cols:
        return empty
    ind = sp.csr_matrix((np.ones(len(rows)), (codes, rows)), shape=(len(names), adata.n_obs))
    counts = np.bincount(codes, minlength=len(names)).astype(np.float64)
    sums = ind @ adata.X
    pb = np.asarray(sums.toarray() if sp.issparse(sums) else sums, dtype=np.float64) / counts[:, None]
    A = (pb - pb.mean(0)).T  # genes x groups
    w, V = np.linalg.eigh(A.T @ A)  # the small Gram matrix (groups x groups)
    order = np.argsort(w)[::-1][:k]
    s = np.sqrt(np.maximum(w[order], 0.0))
    good = s > 1e-8 * max(s.max(initial=0.0), 1e-300)
    order, s = order[good], s[good]
    if not len(s):
        return empty
    U = (A @ V[:, order]) / s  # genes x k'
    perts = sorted(cols)
    return {"perts": perts, "vectors": U[[cols[p] for p in perts]].astype(np.float32), "k": int(len(s)),
            "rule": f"rows of the top {len(s)} left singular vectors of the training pseudo-bulk "
                    f"({len(names)} (condition, context) groups incl. controls x {adata.n_vars} "
                    "measured genes, centred per gene)"}
