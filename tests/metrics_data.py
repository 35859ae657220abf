"""Small canonical AnnData (the unified.h5ad schema, with a split) for the metrics tests.

Biology: every perturbation shares one shift (the trap of SPEC section 7), knocks its own gene
down, and moves one of a few gene programs; contexts differ in baseline expression.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData


def make_canonical(n_genes: int = 60, n_perts: int = 20, cells_per: int = 25, n_ctrl: int = 150,
                   contexts: tuple[str, ...] = ("LineA", "LineB"), combos: int = 0,
                   seed: int = 0, sparse: bool = False, hold_context: str | None = None,
                   shared_shift: float = 0.6, n_drugs: int = 0) -> AnnData:
    rng = np.random.default_rng(seed)
    genes = [f"G{i:03d}" for i in range(n_genes)]
    # perturbations are genes of the panel (their own row exists), except n_drugs named DRUGi
    perts = [f"DRUG{i}" if i < n_drugs else g for i, g in enumerate(genes[:n_perts])]
    shared = shared_shift * rng.normal(0, 1, n_genes)
    programs = rng.normal(0, 1, (4, n_genes)) * (rng.random((4, n_genes)) < 0.3)
    effects = {}
    for i, p in enumerate(perts):
        e = shared + rng.uniform(0.5, 1.5) * programs[i % 4]
        e[i] -= 1.5
        effects[p] = e
    singles = list(perts)
    pairs = []
    for k in range(combos):
        a, b = perts[(2 * k) % n_perts], perts[(2 * k + 1) % n_perts]
        pairs.append(f"{a}+{b}")
        effects[f"{a}+{b}"] = effects[a] + effects[b] - shared + 0.2 * rng.normal(0, 1, n_genes)

    # split by perturbation (unseen perturbation / combination), or by context
    order = rng.permutation(singles)
    n_te, n_va = max(2, n_perts // 5), max(2, n_perts // 5)
    pert_split = {p: "test" for p in order[:n_te]}
    pert_split.update({p: "val" for p in order[n_te:n_te + n_va]})
    pert_split.update({p: "train" for p in order[n_te + n_va:]})
    if pairs:
        for p in singles:
            pert_split[p] = "train"
        for j, p in enumerate(pairs):
            pert_split[p] = "test" if j % 2 == 0 else "val"

    rows, X = [], []
    for c_i, ctx in enumerate(contexts):
        base = 1.5 + 0.3 * c_i + rng.normal(0, 0.5, n_genes)
        for cond in ["control"] + singles + pairs:
            n = n_ctrl if cond == "control" else cells_per
            mean = base + (0 if cond == "control" else effects[cond])
            X.append(np.maximum(mean + rng.normal(0, 0.4, (n, n_genes)), 0))
            for j in range(n):
                if hold_context is not None:
                    split = "test" if ctx == hold_context else ("val" if j % 5 == 0 else "train")
                elif cond == "control":
                    split = ("train", "train", "train", "val", "test")[j % 5]
                else:
                    split = pert_split[cond]
                rows.append({"cell_type": ctx, "batch_id": "b0", "donor_id": "d0",
                             "pert_type": "control" if cond == "control" else "crispr",
                             "is_control": cond == "control", "condition_name": cond,
                             "dataset_id": "synth", "split": split})
    obs = pd.DataFrame(rows)
    obs.index = [f"c{i}" for i in range(len(obs))]
    Xd = np.vstack(X).astype(np.float32)
    vocab = list(perts)
    mask = np.zeros((len(obs), len(vocab)), np.float32)
    col = {p: i for i, p in enumerate(vocab)}
    for i, cond in enumerate(obs["condition_name"]):
        if cond != "control":
            for part in cond.split("+"):
                mask[i, col[part]] = 1.0
    ad = AnnData(sp.csr_matrix(Xd) if sparse else Xd, obs=obs,
                 var=pd.DataFrame({"gene_symbol": genes}, index=[f"ENSG{i:05d}" for i in range(n_genes)]))
    ad.obsm["pert_mask"] = mask
    ad.obsm["pert_dose"] = mask.copy()
    ad.uns["pert_vocab"] = vocab
    return ad
