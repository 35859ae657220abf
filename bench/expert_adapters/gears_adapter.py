"""GEARS (Roohani et al. 2023, cell-gears 0.1.2) on a HarmonyCell task folder; runs inside GEARS's
own venv.

It reads exactly what a HarmonyCell sandbox reads (``train.npz``, ``controls.npz``,
``queries.npz``, ``meta.json``; never a held-out target) and writes ``pred_test.npy`` (queries x
genes, in the order of the meta's test queries), which the host scores like any node's.

GEARS downloads its GO graph and gene list from Harvard Dataverse unless they already sit in its
``data_path``; the host writes them there first, from the local gene database
(``bench/gears_go.py``, into ``<out>/gears_data``). This adapter checks they are all present and
blocks every socket connection of its own process, so a download attempt fails loudly instead of
being made.

How the task is put to GEARS:
- cells: the training cells of perturbed conditions plus every control cell (controls are
  inputs), in GEARS's naming: ``ctrl``, ``GENE+ctrl``, ``A+B``; ``cell_type`` = the context;
- ``PertData(default_pert_graph=True)`` with the host's files (perturbation graph: the task's
  genes and perturbed genes that have GO terms), ``new_data_process`` (its DE genes and
  non-dropout genes), a custom split: a seeded tenth of the training conditions is GEARS's
  validation set (it keeps the epoch with the best validation top-20-DE MSE), the rest and
  ``ctrl`` train;
- as GEARS's own ``load`` does, a training condition with a gene outside the GO graph is dropped;
  a test query with such a gene cannot be predicted by GEARS (``predict`` refuses it), so its row
  is the mean control expression of its context (no effect), and the queries this applied to are
  listed as ``not_in_go`` in ``adapter_result.json``;
- a query = ``GEARS.predict`` on 300 random control cells of its context (GEARS's own sampling),
  averaged: mean predicted expression over the sandbox's genes.

Usage: python gears_adapter.py --data DIR --out DIR [--seed 0] [--epochs 20] [--gears-data DIR]
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import shutil
import socket
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

CTRL = "ctrl"  # GEARS's control condition
# the files GEARS downloads when they are missing (bench/gears_go.py writes them)
GEARS_FILES = ("gene2go_all.pkl", "essential_all_data_pert_genes.pkl", "go_essential_all/go_essential_all.csv")
VAL_SHARE = 0.1


def no_network(*_args, **_kwargs):
    raise RuntimeError("GEARS tried to open a network connection: a file it downloads is missing from "
                       "its data path (bench/gears_go.py writes them)")


def load(data: Path) -> dict:
    return {"meta": json.loads((data / "meta.json").read_text()),
            "train": dict(np.load(data / "train.npz")),
            "controls": dict(np.load(data / "controls.npz")),
            "queries": dict(np.load(data / "queries.npz"))}


def genes_of(condition: str, control_label: str) -> list[str]:
    """HarmonyCell's condition name ("A", sorted "A+B", the control label) as its genes."""
    return [] if condition == control_label else condition.split("+")


def gears_condition(genes: list[str]) -> str:
    """GEARS's name: ``ctrl``, ``A+ctrl``, ``A+B``."""
    return CTRL if not genes else "+".join(genes if len(genes) > 1 else [genes[0], CTRL])


def training_adata(d: dict, in_go: set[str]) -> tuple[ad.AnnData, list[str]]:
    """Training perturbed cells whose genes are all in the GO graph, plus every control cell;
    also the training conditions dropped (a gene outside the graph, or a single cell, which
    GEARS's DE ranking cannot test)."""
    meta, tr, ct = d["meta"], d["train"], d["controls"]
    rows = ~tr["is_control"].astype(bool)
    names = [meta["train_conditions"][int(i)] for i in tr["condition"][rows]]
    conds = pd.Series([gears_condition(genes_of(c, meta["control_label"])) for c in names])
    # GEARS ranks DE genes per condition within each context (scanpy's t-test): two cells at least
    n_cells = conds.groupby([conds, pd.Series(tr["context"][rows])]).transform("size").to_numpy()
    ok = conds.map(lambda c: all(g in in_go for g in c.split("+") if g != CTRL)).to_numpy() & (n_cells >= 2)
    dropped = sorted(set(names[i] for i in np.flatnonzero(~ok)))
    X = np.vstack([tr["X"][rows][ok], ct["X"]]).astype(np.float32)
    ctx = np.concatenate([tr["context"][rows][ok], ct["context"]])
    obs = pd.DataFrame({"condition": list(conds[ok]) + [CTRL] * len(ct["X"]),
                        "cell_type": [meta["contexts"][int(i)] for i in ctx]},
                       index=[f"c{i}" for i in range(len(X))])
    a = ad.AnnData(X=sp.csr_matrix(X), obs=obs)  # GEARS reads rows with .toarray()
    a.var_names = meta["genes"]
    a.var["gene_name"] = meta["genes"]
    return a, dropped


def split_dict(conditions: list[str], seed: int) -> dict[str, list[str]]:
    perts = sorted(c for c in set(conditions) if c != CTRL)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(VAL_SHARE * len(perts)))) if len(perts) > 1 else 0
    val = set(rng.choice(perts, size=n_val, replace=False).tolist()) if n_val else set()
    return {"train": [CTRL] + [c for c in perts if c not in val], "val": sorted(val), "test": []}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--gears-data", type=Path, default=None,
                    help="GEARS's data path holding the host's GO files (default: OUT/gears_data)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    t0 = time.time()
    out = args.out.resolve()
    gdata = (args.gears_data or out / "gears_data").resolve()
    missing = [f for f in GEARS_FILES if not (gdata / f).is_file()]
    if missing:
        raise SystemExit(f"GEARS's GO files are missing from {gdata}: {', '.join(missing)}; the host writes "
                         "them (bench/experts.py, bench/gears_go.py) before it calls this adapter")
    socket.socket.connect = no_network  # nothing below may reach the network
    socket.create_connection = no_network
    socket.getaddrinfo = no_network  # a name lookup comes first

    import torch
    from gears import GEARS, PertData
    from gears.utils import filter_pert_in_go

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    d = load(args.data)
    meta = d["meta"]
    with open(gdata / GEARS_FILES[0], "rb") as fh:
        in_go = set(pickle.load(fh))
    with open(gdata / GEARS_FILES[1], "rb") as fh:
        in_go &= set(pickle.load(fh))  # GEARS's perturbation graph: listed genes with GO terms
    a, dropped = training_adata(d, in_go)
    # GEARS caches its processed data and co-expression graph under the dataset's folder and reuses
    # any it finds: a previous run's would be another task's
    shutil.rmtree(gdata / "task", ignore_errors=True)
    pert_data = PertData(str(gdata), default_pert_graph=True)
    pert_data.new_data_process(dataset_name="task", adata=a)
    # the conditions kept are exactly those GEARS's own load() would keep
    assert all(filter_pert_in_go(c, pert_data.pert_names) for c in pert_data.adata.obs["condition"].unique())
    splits = split_dict(list(pert_data.adata.obs["condition"].astype(str)), args.seed)
    split_path = gdata / "task" / "split.pkl"
    split_path.write_bytes(pickle.dumps(splits))
    pert_data.prepare_split(split="custom", split_dict_path=str(split_path))
    pert_data.get_dataloader(batch_size=args.batch_size, test_batch_size=128)
    del pert_data.dataloader["test_loader"]  # no test targets here: the host scores the queries
    model = GEARS(pert_data, device="cpu")
    model.model_initialize(hidden_size=64)
    t_train = time.time()
    model.train(epochs=args.epochs, lr=1e-3)
    t_train = time.time() - t_train

    full = model.adata
    ctrl_rows = full.obs["condition"].astype(str).to_numpy() == CTRL
    ctx_of = full.obs["cell_type"].astype(str).to_numpy()
    genes_pred = set(model.pert_list)
    queries = meta["queries"]["test"]
    pred = np.zeros((len(queries), len(meta["genes"])), dtype=np.float32)
    not_in_go = []
    for i, q in enumerate(queries):
        genes = genes_of(q["condition"], meta["control_label"])
        same_ctx = ctrl_rows & (ctx_of == q["context"])
        if not same_ctx.any():
            same_ctx = ctrl_rows
        if not all(g in genes_pred for g in genes):
            not_in_go.append(q["condition"])
            pred[i] = np.asarray(full.X[same_ctx].mean(0)).ravel()
            continue
        # GEARS.predict samples its control cells from model.adata: give it the query's context
        model.adata, model.saved_pred = full[same_ctx | ~ctrl_rows], {}
        pred[i] = model.predict([genes])["_".join(genes)]
    model.adata = full
    np.save(out / "pred_test.npy", pred)
    from importlib.metadata import version

    (out / "adapter_result.json").write_text(json.dumps({
        "expert": "gears", "version": version("cell-gears"), "seconds": round(time.time() - t0, 1),
        "train_seconds": round(t_train, 1), "train_cells": int(full.n_obs), "epochs": args.epochs,
        "graph_genes": len(model.pert_list), "train_conditions": len(splits["train"]) - 1,
        "val_conditions": len(splits["val"]),
        "dropped_train_conditions": dropped, "not_in_go": not_in_go, "n_queries": len(queries),
        "network": "every socket connection refused in this process; GEARS read its files from " + str(gdata),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
