"""STATE (Arc Institute's State Transition model, arc-state) on a HarmonyCell task folder.

Runs inside STATE's own venv (its ``state`` console script sits beside the interpreter). It
reads exactly what a HarmonyCell sandbox reads (``train.npz``, ``controls.npz``, ``queries.npz``,
``meta.json``; never a held-out target) and writes ``pred_test.npy`` (queries x genes, in the
order of ``queries.npz``'s test rows), which the host scores like any node's.

How the task is put to STATE:
- cells: the training cells plus every control cell (controls are inputs), in one h5ad with obs
  ``pert`` (the condition name; the control label for controls), ``cell_type`` (the context)
  and ``batch`` (the context too: a sandbox carries no finer batch);
- a cell-load TOML that puts that whole file in training (no zeroshot/fewshot split, so no
  test cells: the held-out targets are not in the folder anyway);
- ``state tx train`` with a small CPU transformer (hidden 64-128, 2 layers, cell sets of 16),
  ``max_steps`` = ``--epochs`` passes over the cells in sets of ``set_len x batch_size`` cells,
  capped by ``--max-steps`` (see ``steps_for``), wandb off;
- a query = the control cells of its context (test-split controls first, as the harness does)
  relabelled with the query's condition, run through ``state tx infer``; the prediction is the
  mean predicted expression. STATE's perturbation encoder is a one-hot over the training
  conditions, so a condition it never saw (an unseen gene, or a combination absent from
  training) is given the control one-hot: that is STATE's own behaviour, and the number of
  queries it applied to is recorded as ``unseen_fallback`` in ``adapter_result.json``.

Usage: python state_adapter.py --data DIR --out DIR [--seed 0] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

TEST = 2  # the sandbox's split code for test controls
PERT, CTYPE, BATCH, QUERY = "pert", "cell_type", "batch", "hc_query"


def load(data: Path) -> dict:
    return {"meta": json.loads((data / "meta.json").read_text()),
            "train": dict(np.load(data / "train.npz")),
            "controls": dict(np.load(data / "controls.npz")),
            "queries": dict(np.load(data / "queries.npz"))}


def steps_for(epochs: int, n_cells: int, set_len: int, batch_size: int, cap: int) -> int:
    """Optimiser steps for ``epochs`` passes over the cells (STATE trains by steps, in cell sets),
    capped so that a large task stays within a CPU budget (the cap is recorded in the result)."""
    return min(cap, max(20, epochs * -(-n_cells // (set_len * batch_size))))


def training_adata(d: dict) -> ad.AnnData:
    meta, tr, ct = d["meta"], d["train"], d["controls"]
    names = meta["train_conditions"]
    ctrl = meta["control_label"]
    rows = ~tr["is_control"].astype(bool)
    X = np.vstack([tr["X"][rows], ct["X"]]).astype(np.float32)
    pert = [names[int(i)] for i in tr["condition"][rows]] + [ctrl] * len(ct["X"])
    ctx = [meta["contexts"][int(i)] for i in np.concatenate([tr["context"][rows], ct["context"]])]
    a = ad.AnnData(X=X, obs=pd.DataFrame({PERT: pert, CTYPE: ctx, BATCH: ctx},
                                         index=[f"c{i}" for i in range(len(X))]))
    a.var_names = meta["genes"]
    return a


def query_adata(d: dict, rng: np.random.Generator, max_ctrl: int) -> ad.AnnData:
    """Every query's control cells relabelled with its condition, plus the controls themselves."""
    meta, ct = d["meta"], d["controls"]
    ctrl = meta["control_label"]
    parts, obs = [ct["X"]], [pd.DataFrame({PERT: ctrl, CTYPE: [meta["contexts"][int(i)] for i in ct["context"]],
                                           QUERY: -1})]
    for i, k in enumerate(d["queries"]["test_context"]):
        pool = np.flatnonzero((ct["context"] == k) & (ct["split"] == TEST))
        if len(pool) == 0:
            pool = np.flatnonzero(ct["context"] == k)
        if len(pool) > max_ctrl:
            pool = rng.choice(pool, size=max_ctrl, replace=False)
        q = meta["queries"]["test"][i]
        parts.append(ct["X"][pool])
        obs.append(pd.DataFrame({PERT: q["condition"], CTYPE: q["context"], QUERY: i}, index=range(len(pool))))
    o = pd.concat(obs, ignore_index=True)
    o[BATCH] = o[CTYPE]
    o.index = [f"q{i}" for i in range(len(o))]
    a = ad.AnnData(X=np.vstack(parts).astype(np.float32), obs=o)
    a.var_names = meta["genes"]
    return a


def run(cmd: list[str], log: Path) -> None:
    with log.open("w") as fh:
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "WANDB_MODE": "disabled"})
    if res.returncode != 0:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"{cmd[1:3]} failed (exit {res.returncode}); log: {log}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--set-len", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=1500, help="cap on optimiser steps")
    ap.add_argument("--max-ctrl-per-query", type=int, default=256)
    args = ap.parse_args()
    t0 = time.time()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    state = str(Path(sys.executable).parent / "state")
    d = load(args.data)
    meta = d["meta"]
    (out / "train_data").mkdir(exist_ok=True)
    a = training_adata(d)
    a.write_h5ad(out / "train_data" / "task.h5ad")
    toml = out / "data.toml"
    toml.write_text(f'[datasets]\ntask = "{out / "train_data"}"\n\n[training]\ntask = "train"\n')
    steps = steps_for(args.epochs, a.n_obs, args.set_len, args.batch_size, args.max_steps)
    h = args.hidden
    overrides = [
        f"data.kwargs.toml_config_path={toml}", "data.kwargs.embed_key=null", "data.kwargs.output_space=all",
        f"data.kwargs.pert_col={PERT}", f"data.kwargs.cell_type_key={CTYPE}", f"data.kwargs.batch_col={BATCH}",
        f"data.kwargs.control_pert={meta['control_label']}", "data.kwargs.num_workers=0",
        "data.kwargs.pin_memory=false", "model=state_sm", "model.device=cpu",
        f"model.kwargs.cell_set_len={args.set_len}", f"model.kwargs.hidden_dim={h}",
        "model.kwargs.n_encoder_layers=2", "model.kwargs.n_decoder_layers=2",
        f"model.kwargs.transformer_backbone_kwargs.intermediate_size={4 * h}",
        "model.kwargs.transformer_backbone_kwargs.num_hidden_layers=2",
        "model.kwargs.transformer_backbone_kwargs.num_attention_heads=4",
        "model.kwargs.transformer_backbone_kwargs.num_key_value_heads=4",
        f"model.kwargs.transformer_backbone_kwargs.head_dim={h // 4}",
        f"training.batch_size={args.batch_size}", f"training.max_steps={steps}",
        f"training.val_freq={steps}", f"training.ckpt_every_n_steps={steps}", f"training.train_seed={args.seed}",
        "wandb.tags=[]", "use_wandb=false", f"output_dir={out}", "name=run", "overwrite=true"]
    t_train = time.time()
    run([state, "tx", "train", *overrides], out / "train.log")
    t_train = time.time() - t_train
    rng = np.random.default_rng(args.seed + 1)
    qa = query_adata(d, rng, args.max_ctrl_per_query)
    qa.write_h5ad(out / "queries.h5ad")
    run([state, "tx", "infer", "--model-dir", str(out / "run"), "--adata", str(out / "queries.h5ad"),
         "--output", str(out / "queries_pred.h5ad"), "--pert-col", PERT, "--celltype-col", CTYPE,
         "--batch-col", BATCH, "--control-pert", meta["control_label"], "--seed", str(args.seed), "--quiet"],
        out / "infer.log")
    sim = ad.read_h5ad(out / "queries_pred.h5ad")
    X = np.asarray(sim.X.todense() if hasattr(sim.X, "todense") else sim.X, dtype=np.float32)
    qid = sim.obs[QUERY].to_numpy()
    n_q = len(d["queries"]["test_context"])
    pred = np.stack([X[qid == i].mean(0) for i in range(n_q)]).astype(np.float32)
    import torch

    # the conditions STATE's one-hot encoder knows; infer gives any other the control one-hot
    seen = {str(k) for k in torch.load(out / "run" / "pert_onehot_map.pt", weights_only=False)}
    fallback = sum(q["condition"] not in seen for q in meta["queries"]["test"])
    np.save(out / "pred_test.npy", pred)
    from importlib.metadata import version

    (out / "adapter_result.json").write_text(json.dumps({
        "expert": "state", "version": version("arc-state"), "seconds": round(time.time() - t0, 1),
        "train_seconds": round(t_train, 1), "train_cells": int(a.n_obs), "max_steps": steps,
        "unseen_fallback": int(fallback), "n_queries": n_q,
        "peak_rss_mb": round(max(resource.getrusage(r).ru_maxrss for r in
                                 (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
