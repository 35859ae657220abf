"""Benchmark: host-side scoring of 500 held-out perturbations on 100k cells x 2,000 genes.

Times ``targets_for`` (pseudo-bulk of every group) + ``score`` (all metrics, ranks included) and,
as a reference measured in the same run on the same matrix, one plain numpy pass over X
(``X.mean(0)``). Writes bench/results/score.json. Target: scoring < 2 s on 2 cores.

    python bench/score.py [--cells 100000] [--genes 2000] [--perts 500] [--density 0.3 --out ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from harmonycell.tools.record import atomic


def build(n_cells: int, n_genes: int, n_test: int, n_train: int, seed: int = 0,
          density: float = 1.0) -> AnnData:
    rng = np.random.default_rng(seed)
    n_perts = n_test + n_train
    n_ctrl = n_cells // 6
    per = (n_cells - n_ctrl) // n_perts
    n_ctrl = n_cells - per * n_perts
    names = np.array(["control"] + [f"G{i}" for i in range(n_perts)])  # genes of the panel
    cond = np.concatenate([np.zeros(n_ctrl, int), np.repeat(np.arange(1, n_perts + 1), per)])
    effects = rng.normal(0, 0.3, (n_perts + 1, n_genes)).astype(np.float32)
    effects[0] = 0
    X = rng.gamma(2.0, 0.5, (n_cells, n_genes)).astype(np.float32)
    X += effects[cond]
    if density < 1.0:  # unified.h5ad stores X as CSR: zero out cells x genes, keep it sparse
        X[rng.random(X.shape, dtype=np.float32) > density] = 0
        X = sp.csr_matrix(X)
    ctrl_split = np.array(["train", "train", "train", "val", "test"])[np.arange(n_cells) % 5]
    pert_split = np.where(cond <= n_test, "test", "train")
    obs = pd.DataFrame({
        "cell_type": "K562", "batch_id": "b0", "donor_id": "d0",
        "pert_type": np.where(cond == 0, "control", "crispr"),
        "is_control": cond == 0, "condition_name": names[cond], "dataset_id": "bench",
        "split": np.where(cond == 0, ctrl_split, pert_split),
    }, index=[f"c{i}" for i in range(n_cells)])
    var = pd.DataFrame({"gene_symbol": [f"G{i}" for i in range(n_genes)]},
                       index=[f"ENSG{i:08d}" for i in range(n_genes)])
    ad = AnnData(X, obs=obs, var=var)
    ad.uns["pert_vocab"] = list(names[1:])
    return ad


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--perts", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--density", type=float, default=1.0, help="< 1: sparse CSR X with this density")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "score.json")
    args = ap.parse_args()

    from harmonycell.tools.evaluation.baselines import compute_baselines
    from harmonycell.tools.evaluation.metrics import score
    from harmonycell.tools.evaluation.pseudobulk import targets_for

    ad = build(args.cells, args.genes, args.perts, n_train=max(2, args.perts // 5), density=args.density)
    t_ref, _ = best_of(lambda: ad.X.mean(0), args.repeat)  # works for dense and CSR
    t_targets, targets = best_of(lambda: targets_for(ad, "test"), args.repeat)
    pred = (targets.y + np.random.default_rng(1).normal(0, 0.1, targets.y.shape)).astype(np.float32)
    t_score, rep = best_of(lambda: score(targets, pred), args.repeat)
    t_base, _ = best_of(lambda: compute_baselines(ad, "test"), 1)
    total = t_targets + t_score
    result = {
        "cells": args.cells, "x_density": args.density, "x_sparse": args.density < 1.0, "genes": args.genes, "scored_perturbations": len(targets.queries),
        "targets_for_s": round(t_targets, 4), "score_s": round(t_score, 4),
        "scoring_total_s": round(total, 4), "target_s": 2.0, "meets_target": total < 2.0,
        "reference": "one numpy pass over X (X.mean(0)), same matrix, same run",
        "reference_s": round(t_ref, 4), "ratio_scoring_to_reference": round(total / t_ref, 2),
        "compute_baselines_s": round(t_base, 4),
        "deltapcc_check": rep.aggregate["DeltaPCC"],
        "machine": platform.processor() or platform.machine(),
    }
    atomic.write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
