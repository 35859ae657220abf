"""The on-disk task format: what the sandbox may see, derived from the canonical AnnData.

The canonical ``unified.h5ad`` (with ``obs['split']``) stays on the host: it holds the held-out
targets, validation and test alike. ``export_sandbox_data`` writes the sandbox-visible part:
training cells with their targets (nothing else has any), control cells of every split (inputs, not targets), the val/test *queries* (which
perturbation in which context to predict) and perturbation features computed from training data
only. See ``harmonycell.sandbox.harness`` for how the sandbox reads it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from harmonycell.tools.genes.db import GeneDB, GeneKnowledgeMissing
from harmonycell.tools.genes.features import knowledge_features
from harmonycell.tools.record import atomic
from harmonycell.tools.tasks.registry import task_kind
from harmonycell.tools.schema import (
    CONTROL_LABEL,
    OBSM_DOSE,
    OBSM_MASK,
    SPLIT,
    UNS_PERTS,
    VAR_SYMBOL,
    context_labels,
)

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
N_FEATURE_PCS = 10


@dataclass(frozen=True)
class Query:
    condition: str
    context: str


def dense(m) -> np.ndarray:
    return np.asarray(m.toarray() if sp.issparse(m) else m, dtype=np.float32)


def queries_for(adata: AnnData, split: str) -> list[Query]:
    """Held-out (condition, context) pairs of a split, in a stable order."""
    obs = adata.obs
    sel = (obs[SPLIT] == split) & ~obs["is_control"].astype(bool)
    ctx = context_labels(obs[sel])
    pairs = sorted(set(zip(obs.loc[sel, "condition_name"].astype(str), ctx)))
    return [Query(c, k) for c, k in pairs]


def pca_gene_loadings(X: np.ndarray, k: int = N_FEATURE_PCS) -> np.ndarray:
    """Genes x k: each gene's loadings on the top-k principal components of the expression X
    (cells x genes), scaled by the components' standard deviations. The gene embedding of the
    linear baseline (Ahlmann-Eltze et al. 2025); k shrinks when X has too few cells or genes."""
    Xc = X - X.mean(0, keepdims=True)
    k = int(min(k, min(Xc.shape) - 1)) if min(Xc.shape) > 1 else 0
    if k <= 0:
        return np.zeros((X.shape[1], 0), dtype=np.float32)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    return (vt[:k].T * (s[:k] / np.sqrt(max(len(Xc) - 1, 1)))).astype(np.float32)


def perturbation_features(adata: AnnData, train_rows: np.ndarray, k: int = N_FEATURE_PCS) -> np.ndarray:
    """Per single perturbation: the perturbed gene's loadings in a PCA of the training expression
    (Ahlmann-Eltze et al. 2025), plus a last column flagging whether the gene is measured.
    Non-gene perturbations (drugs, cytokines) get zeros and rely on their learnable embedding."""
    loadings = pca_gene_loadings(dense(adata.X[train_rows]), k)  # genes x k
    k = loadings.shape[1]
    perts = list(adata.uns[UNS_PERTS])
    feats = np.zeros((len(perts), N_FEATURE_PCS + 1), dtype=np.float32)
    if k <= 0:
        return feats
    scale = np.abs(loadings).max() or 1.0
    index = {}
    symbols = adata.var[VAR_SYMBOL].astype(str) if VAR_SYMBOL in adata.var else adata.var_names
    for i, (gid, sym) in enumerate(zip(adata.var_names.astype(str), symbols)):
        index.setdefault(sym.upper(), i)
        index.setdefault(gid.upper(), i)
    for j, p in enumerate(perts):
        g = index.get(str(p).upper())
        if g is not None:
            feats[j, :k] = loadings[g] / scale
            feats[j, -1] = 1.0
    return feats


def export_sandbox_data(adata: AnnData, out_dir: Path) -> dict:
    """Write the sandbox-visible task data to ``out_dir``; return its meta (also in meta.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    obs = adata.obs
    perts = [str(p) for p in adata.uns[UNS_PERTS]]
    ctx = context_labels(obs)
    contexts = sorted(ctx.unique())
    ctx_code = ctx.map({c: i for i, c in enumerate(contexts)}).to_numpy(np.int32)
    is_ctrl = obs["is_control"].astype(bool).to_numpy()
    split = obs[SPLIT].astype(str).to_numpy()
    mask, dose = adata.obsm[OBSM_MASK], adata.obsm[OBSM_DOSE]

    train_rows = np.flatnonzero(split == "train")
    train_conditions = sorted(obs["condition_name"].astype(str).iloc[train_rows].unique())
    cond_code = {c: i for i, c in enumerate(train_conditions)}
    save_npz(out_dir / "train.npz",
        X=dense(adata.X[train_rows]),
        mask=dense(mask[train_rows]),
        dose=dense(dose[train_rows]),
        context=ctx_code[train_rows],
        is_control=is_ctrl[train_rows],
        condition=obs["condition_name"].astype(str).iloc[train_rows].map(cond_code).to_numpy(np.int32),
    )
    ctrl_rows = np.flatnonzero(is_ctrl)
    save_npz(out_dir / "controls.npz",
        X=dense(adata.X[ctrl_rows]),
        context=ctx_code[ctrl_rows],
        split=np.array([SPLIT_CODES[s] for s in split[ctrl_rows]], dtype=np.int8),
    )
    arrays, queries = {}, {}
    ctx_index = {c: i for i, c in enumerate(contexts)}
    for s in ("val", "test"):
        qs = queries_for(adata, s)
        queries[s] = [{"condition": q.condition, "context": q.context} for q in qs]
        m = np.zeros((len(qs), len(perts)), np.float32)
        d = np.zeros((len(qs), len(perts)), np.float32)
        for i, q in enumerate(qs):
            rows = np.flatnonzero((split == s) & (obs["condition_name"].astype(str).to_numpy() == q.condition)
                                  & (ctx.to_numpy() == q.context))
            m[i] = dense(mask[rows[:1]])[0]
            d[i] = dense(dose[rows]).mean(0)
        arrays.update({f"{s}_mask": m, f"{s}_dose": d,
                       f"{s}_context": np.array([ctx_index[q.context] for q in qs], np.int32)})
    save_npz(out_dir / "queries.npz", **arrays)
    feats = perturbation_features(adata, train_rows)
    atomic.write_with(out_dir / "pert_features.npy", lambda p: p.write_bytes(npy_bytes(feats)))
    knowledge = export_knowledge_features(perts, out_dir)
    meta = {
        "genes": [str(g) for g in adata.var_names],
        "perts": perts,
        "contexts": contexts,
        "train_conditions": train_conditions,
        "queries": queries,
        "control_label": CONTROL_LABEL,
        "n_train_cells": int(len(train_rows)),
        "n_control_cells": int(len(ctrl_rows)),
        # what the split holds out; the harness's early stopping holds out the same kind of unit
        # from the training cells (no validation or test target ever enters the sandbox)
        "holdout_unit": holdout_unit(adata),
        "gene_knowledge": knowledge,
    }
    atomic.write_json(out_dir / "meta.json", meta)
    return meta


def export_knowledge_features(perts: list[str], out_dir: Path) -> dict:
    """``pert_features_go.npy``: each perturbation's GO embedding (a zero row where the gene
    database does not know it: a drug, a reporter, an unknown name), for the models that read
    gene knowledge. Without the database, no file: the models use the data features alone."""
    try:
        with GeneDB() as db:
            k = knowledge_features(perts, db)
            version = db.version
    except GeneKnowledgeMissing as e:
        return {"available": False, "why": e.one_line()}
    atomic.write_with(out_dir / "pert_features_go.npy", lambda p: p.write_bytes(npy_bytes(k.matrix)))
    return {"available": True, "source": k.source, "version": version, "unknown": k.unknown,
            "renamed": {v: s for v, s in k.symbols.items() if v != s}}


def holdout_unit(adata: AnnData) -> str:
    """What the task's kind holds out of the training cells for early stopping: ``condition`` or
    ``context`` (``condition`` when the data carry no task)."""
    task = (adata.uns.get("split_info") or {}).get("task")
    return task_kind(str(task)).inner_unit if task else "condition"


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(fh, **arrays)

    atomic.write_with(path, write)


def load_meta(data_dir: Path) -> dict:
    return json.loads((Path(data_dir) / "meta.json").read_text())


def queries_from_meta(meta: dict, split: str) -> list[Query]:
    """The queries the sandbox was asked to predict, in the order of its prediction rows."""
    return [Query(q["condition"], q["context"]) for q in meta["queries"][split]]
