"""Test support for the model tests: small canonical task data built straight from the synthetic
biology (no Unifier needed), and a tiny pseudo-bulk scoring used only inside these tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from harmonycell.tools.data.synthetic import SimConfig, lab_cells, log_normalise, simulate_biology

SMALL = SimConfig(n_genes=200, n_programs=6, program_size=25, n_perturbed_genes=30, n_combos=0,
                  cells_per_condition=30, n_controls=400, seed=3)


def canonical_unseen_perturbation(cfg: SimConfig = SMALL, seed: int = 0) -> AnnData:
    """Canonical AnnData (common brief schema) with an unseen-perturbation split."""
    bio = simulate_biology(cfg)
    rng = np.random.default_rng(seed)
    conds = sorted(c for c in bio.effects if "+" not in c)
    counts, labels = lab_cells(bio, 0, conds, cfg, rng)
    X = log_normalise(counts)
    labels = np.array(labels)
    is_ctrl = labels == "control"
    order = rng.permutation(conds)
    n_test = max(2, len(conds) // 5)
    n_val = max(2, len(conds) // 10)
    split_of = {c: "test" for c in order[:n_test]}
    split_of.update({c: "val" for c in order[n_test:n_test + n_val]})
    split = np.array([split_of.get(c, "train") for c in labels], dtype=object)
    ctrl_rows = np.flatnonzero(is_ctrl)
    u = rng.random(len(ctrl_rows))
    split[ctrl_rows] = np.where(u < 0.2, "test", np.where(u < 0.3, "val", "train"))
    vocab = conds
    mask = np.zeros((len(labels), len(vocab)), np.float32)
    col = {c: i for i, c in enumerate(vocab)}
    for i, c in enumerate(labels):
        if c != "control":
            mask[i, col[c]] = 1.0
    obs = pd.DataFrame({
        "cell_type": "LineA", "batch_id": "b1", "donor_id": "d1",
        "pert_type": np.where(is_ctrl, "control", "crispr"),
        "is_control": is_ctrl, "condition_name": labels, "dataset_id": "synth",
        "split": split,
    }, index=[f"c{i}" for i in range(len(labels))])
    var = pd.DataFrame({"gene_symbol": bio.symbols}, index=pd.Index(bio.symbols))
    adata = AnnData(X=sp.csr_matrix(X), obs=obs, var=var)
    adata.obsm["pert_mask"] = sp.csr_matrix(mask)
    adata.obsm["pert_dose"] = np.ones_like(mask)
    adata.uns["pert_vocab"] = list(vocab)
    return adata


def pseudobulk_scores(adata: AnnData, split: str, pred: np.ndarray) -> dict[str, float]:
    """Mean DeltaPCC against the split's control mean, and the train-mean-shift baseline's."""
    from harmonycell.tools.data.taskdata import queries_for

    X = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X)
    obs = adata.obs
    ctrl = X[(obs["split"] == split).to_numpy() & obs["is_control"].to_numpy()].mean(0)
    tr = (obs["split"] == "train").to_numpy()
    tr_ctrl = X[tr & obs["is_control"].to_numpy()].mean(0)
    tr_conds = obs.loc[tr & ~obs["is_control"].to_numpy(), "condition_name"].unique()
    shift = np.mean([X[(obs["condition_name"] == c).to_numpy() & tr].mean(0) - tr_ctrl
                     for c in tr_conds], axis=0)
    model, base = [], []
    for i, q in enumerate(queries_for(adata, split)):
        rows = (obs["condition_name"] == q.condition).to_numpy() & (obs["split"] == split).to_numpy()
        delta = X[rows].mean(0) - ctrl
        model.append(np.corrcoef(delta, pred[i] - ctrl)[0, 1])
        base.append(np.corrcoef(delta, shift)[0, 1])
    return {"model_delta_pcc": float(np.mean(model)), "train_mean_delta_pcc": float(np.mean(base))}
