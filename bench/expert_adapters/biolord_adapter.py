"""Biolord (Piran et al. 2024) on a HarmonyCell task folder; runs inside biolord's own venv.

It reads exactly what a HarmonyCell sandbox reads (``train.npz``, ``controls.npz``,
``queries.npz``, ``pert_features.npy``, ``meta.json``: training cells, control cells as inputs,
the queries to predict; never a held-out target) and writes ``pred_test.npy`` (queries x genes)
in the sandbox's prediction format, which the host scores like any node's.

How the task is put to biolord:
- cells: the training cells plus every control cell (controls are inputs, not targets);
- categorical attribute ``context`` (cell type / line);
- ordered attribute ``pert`` = [multi-hot mask x dose, the perturbed genes' features summed]:
  the features are the same training-PCA loadings our own models get (SPEC 3), so an unseen gene
  perturbation has a non-zero attribute, as in biolord's GEARS-split experiments;
- a query = the control cells of its context (test-split controls first, as the harness does)
  decoded from their learnt latent with the attribute set to the query's.

Usage: python biolord_adapter.py --data DIR --out DIR [--seed 0] [--epochs 200]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

TEST = 2  # the sandbox's split code for test controls


def load(data: Path) -> dict:
    return {"meta": json.loads((data / "meta.json").read_text()),
            "train": dict(np.load(data / "train.npz")),
            "controls": dict(np.load(data / "controls.npz")),
            "queries": dict(np.load(data / "queries.npz")),
            "features": np.load(data / "pert_features.npy")}


def attribute(mask: np.ndarray, dose: np.ndarray, features: np.ndarray) -> np.ndarray:
    return np.hstack([mask * dose, mask @ features]).astype(np.float32)


def build_adata(d: dict) -> tuple[ad.AnnData, np.ndarray]:
    tr, ct = d["train"], d["controls"]
    n_perts = d["features"].shape[0]
    pert_rows = ~tr["is_control"].astype(bool)
    zeros = np.zeros((len(ct["X"]), n_perts), dtype=np.float32)
    X = np.vstack([tr["X"][pert_rows], ct["X"]]).astype(np.float32)
    attr = np.vstack([attribute(tr["mask"][pert_rows], tr["dose"][pert_rows], d["features"]),
                      attribute(zeros, zeros, d["features"])])
    ctx = np.concatenate([tr["context"][pert_rows], ct["context"]])
    a = ad.AnnData(X=X)
    a.obs["context"] = [d["meta"]["contexts"][int(i)] for i in ctx]
    a.obs["context"] = a.obs["context"].astype("category")
    a.obsm["pert"] = attr
    ctrl_rows = np.arange(int(pert_rows.sum()), a.n_obs)  # where the controls sit in ``a``
    return a, ctrl_rows


def main() -> int:
    import biolord

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--max-ctrl-per-query", type=int, default=512)
    args = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    d = load(args.data)
    a, ctrl_rows = build_adata(d)
    biolord.Biolord.setup_anndata(a, ordered_attributes_keys=["pert"], categorical_attributes_keys=["context"])
    # biolord's published Norman configuration, scaled to CPU (n_latent 32, no batch/layer norm)
    module_params = {"decoder_width": 256, "decoder_depth": 3, "attribute_nn_width": 128,
                     "attribute_nn_depth": 2, "n_latent_attribute_categorical": 4,
                     "unknown_attribute_noise_param": 0.2, "seed": args.seed,
                     "use_batch_norm": False, "use_layer_norm": False}
    model = biolord.Biolord(adata=a, n_latent=32, model_name="harmonycell_task", module_params=module_params)
    model.train(max_epochs=args.epochs, batch_size=256, early_stopping=True, accelerator="cpu",
                # biolord 0.0.3 reads latent_wd before setting it unless attribute_nn_wd is given
                plan_kwargs={"latent_lr": 1e-4, "decoder_lr": 1e-4, "attribute_nn_lr": 1e-2,
                             "attribute_nn_wd": 1e-4},
                enable_progress_bar=False, check_val_every_n_epoch=5, default_root_dir=str(args.out),
                # scvi-tools' checkpoint callback expects a loss tensor per batch; biolord optimises
                # manually and returns none, so checkpointing stays off (early stopping still runs)
                enable_checkpointing=False)
    q, ct = d["queries"], d["controls"]
    rng = np.random.default_rng(args.seed + 1)
    pred = np.zeros((len(q["test_context"]), a.n_vars), dtype=np.float32)
    model.module.eval()
    with torch.no_grad():
        for i, k in enumerate(q["test_context"]):
            pool = np.flatnonzero((ct["context"] == k) & (ct["split"] == TEST))
            if len(pool) == 0:
                pool = np.flatnonzero(ct["context"] == k)
            if len(pool) > args.max_ctrl_per_query:
                pool = rng.choice(pool, size=args.max_ctrl_per_query, replace=False)
            tensors = model.get_dataset(a, indices=ctrl_rows[pool])
            vec = attribute(q["test_mask"][i : i + 1], q["test_dose"][i : i + 1], d["features"])
            tensors["pert"] = torch.as_tensor(np.repeat(vec, len(pool), 0))
            mus, _ = model.module.get_expression(tensors)
            pred[i] = mus.mean(0).cpu().numpy()
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "pred_test.npy", pred)
    (args.out / "adapter_result.json").write_text(json.dumps({
        "expert": "biolord", "version": biolord.__version__ if hasattr(biolord, "__version__") else "",
        "seconds": round(time.time() - t0, 1), "train_cells": int(a.n_obs),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
