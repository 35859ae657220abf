"""Training harness that runs *inside* the sandbox (depends only on torch and numpy).

It loads the sandbox-visible task data (never the validation or test targets, which stay on the
host; early stopping uses an inner split of the training units),
imports the generated model module, trains it under the model contract of SPEC section 3, and
writes predictions for the validation and test queries. The host scores them.

Usage: python harness.py --data DIR --model model.py --config config.json --out NODE_DIR

Data folder (written on the host by ``harmonycell.tools.data.taskdata``):
  meta.json          genes, perts (columns of the masks), contexts, queries per split, holdout_unit
  train.npz          X, mask, dose, context, is_control, condition  (training split only)
  controls.npz       X, context, split (0 train, 1 val, 2 test) of all control cells
  queries.npz        {val,test}_{mask,dose,context}: what to predict, one row per query
  pert_features.npy  (n_perts, k) perturbation features computed from training data
  pert_features_go.npy  (n_perts, 64) GO embedding from gene knowledge (absent without the
                     gene database; a zero row for a perturbation it does not know)

Model module contract: ``build_model(info) -> torch.nn.Module`` whose ``forward(x_ctrl, pert)``
returns the predicted perturbed expression, ``pert = {"mask": (B, P), "dose": (B, P)}``.
Optional methods: ``loss(x_ctrl, pert, x_target)`` (e.g. an ELBO), ``predict(x_ctrl, pert)``
(e.g. the mean of a generative model), and ``fit(train)`` (a closed-form fit on the training
cells and controls, with the inner split marked; a model left with no trainable parameter skips
gradient training); defaults are the configured loss on ``forward``.

Outputs in NODE_DIR: pred_val.npy, pred_test.npy (queries x genes, float32),
train_log.jsonl (one line per epoch) and harness_result.json; with ``"save_model": true`` in the
config also model.pt, the fitted model (``harmonycell predict`` answers new queries with it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

DEFAULT_CONFIG = {
    "seed": 0,
    "epochs": 100,
    "batch_size": 128,
    "lr": 1e-3,
    "weight_decay": 1e-5,
    "patience": 10,
    "loss": "mse",
    "max_train_seconds": 1800.0,
    "device": "auto",
    "max_ctrl_per_query": 512,
    "inner_val_fraction": 0.1,
}
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def log(msg: str) -> None:
    print(f"[harness] {msg}", flush=True)


def load_data(data_dir: Path) -> dict:
    meta = json.loads((data_dir / "meta.json").read_text())
    train = dict(np.load(data_dir / "train.npz"))
    controls = dict(np.load(data_dir / "controls.npz"))
    queries = dict(np.load(data_dir / "queries.npz"))
    features = np.load(data_dir / "pert_features.npy")
    go = data_dir / "pert_features_go.npy"
    return {"meta": meta, "train": train, "controls": controls, "queries": queries,
            "features": features, "features_go": np.load(go) if go.exists() else None}


def load_model_module(path: Path):
    spec = importlib.util.spec_from_file_location("generated_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["generated_model"] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "build_model"):
        raise AttributeError(f"{path.name} defines no build_model(info)")
    return module


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def pair_controls(ctx: np.ndarray, ctrl_ctx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each cell, the index of a fixed, randomly drawn control cell of the same context."""
    out = np.empty(len(ctx), dtype=np.int64)
    all_idx = np.arange(len(ctrl_ctx))
    for k in np.unique(ctx):
        pool = all_idx[ctrl_ctx == k]
        if len(pool) == 0:  # no training control in this context: any control
            pool = all_idx
        rows = np.flatnonzero(ctx == k)
        out[rows] = rng.choice(pool, size=len(rows), replace=True)
    return out


def inner_split(train: dict, frac: float, rng: np.random.Generator, unit: str = "condition") -> np.ndarray:
    """Boolean mask of training cells held out for early stopping, whole units at a time (the
    unit the task holds out: conditions, or contexts for unseen cell contexts), so that early
    stopping rewards what the task asks. Validation targets never reach the sandbox: this inner
    split of the training cells is all early stopping sees."""
    pert_rows = ~train["is_control"]
    if unit == "context":
        ctxs = np.unique(train["context"][pert_rows])
        if len(ctxs) >= 2:
            n = min(len(ctxs) - 1, max(1, int(round(frac * len(ctxs)))))
            held = rng.choice(ctxs, size=n, replace=False)
            return pert_rows & np.isin(train["context"], held)
    conds = np.unique(train["condition"][pert_rows])
    hold = np.zeros(len(pert_rows), dtype=bool)
    if len(conds) >= 5:
        n = max(1, int(round(frac * len(conds))))
        held = rng.choice(conds, size=n, replace=False)
        hold = pert_rows & np.isin(train["condition"], held)
    else:
        cand = np.flatnonzero(pert_rows)
        if len(cand) >= 10:
            hold[rng.choice(cand, size=max(1, int(frac * len(cand))), replace=False)] = True
    return hold


def make_loss(model: torch.nn.Module, kind: str):
    if hasattr(model, "loss"):
        return model.loss
    base = torch.nn.HuberLoss(delta=1.0) if kind == "huber" else torch.nn.MSELoss()

    def loss(x_ctrl, pert, x_target):
        return base(model(x_ctrl, pert), x_target)

    return loss


def batches(idx: np.ndarray, size: int, rng: np.random.Generator | None, drop_last: bool):
    if rng is not None:
        idx = rng.permutation(idx)
    stop = len(idx) - (len(idx) % size if drop_last else 0)
    for i in range(0, stop, size):
        yield idx[i : i + size]


def train(model, data: dict, cfg: dict, device: torch.device, out: Path) -> dict:
    rng = np.random.default_rng(cfg["seed"])
    tr, ctrls = data["train"], data["controls"]
    train_ctrl = ctrls["split"] == SPLIT_CODES["train"]
    ctrl_X = torch.as_tensor(ctrls["X"][train_ctrl], dtype=torch.float32)
    ctrl_ctx = ctrls["context"][train_ctrl]
    pair = pair_controls(tr["context"], ctrl_ctx, rng)
    X = torch.as_tensor(tr["X"], dtype=torch.float32)
    mask = torch.as_tensor(tr["mask"], dtype=torch.float32)
    dose = torch.as_tensor(tr["dose"], dtype=torch.float32)
    hold = inner_split(tr, cfg["inner_val_fraction"], rng, data["meta"].get("holdout_unit", "condition"))
    t0 = time.time()
    if hasattr(model, "fit"):  # a closed-form model fits itself, choosing on the inner split only
        model.fit({"X": tr["X"], "mask": tr["mask"], "dose": tr["dose"], "context": tr["context"],
                   "is_control": tr["is_control"], "hold": hold,
                   "ctrl_X": ctrls["X"][train_ctrl], "ctrl_context": ctrl_ctx})
    if not any(p.requires_grad for p in model.parameters()):
        (out / "train_log.jsonl").write_text("")
        log("fitted in closed form: no gradient training")
        return {"epochs_run": 0, "best_epoch": None, "best_stop_loss": None,
                "train_seconds": round(time.time() - t0, 3), "fit": "closed form"}
    fit_idx, stop_idx = np.flatnonzero(~hold), np.flatnonzero(hold)
    bs = max(2, min(cfg["batch_size"], len(fit_idx)))
    loss_fn = make_loss(model, cfg["loss"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

    def step_batch(rows):
        xc = ctrl_X[pair[rows]].to(device)
        pert = {"mask": mask[rows].to(device), "dose": dose[rows].to(device)}
        return loss_fn(xc, pert, X[rows].to(device))

    best, best_state, best_epoch, bad = math.inf, None, -1, 0
    log_path = out / "train_log.jsonl"
    epoch = -1
    with open(log_path, "w") as log_fh:
        for epoch in range(cfg["epochs"]):
            model.train()
            total, n = 0.0, 0
            for rows in batches(fit_idx, bs, rng, drop_last=True):
                opt.zero_grad()
                loss = step_batch(rows)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
                n += len(rows)
            model.eval()
            with torch.no_grad():
                if len(stop_idx):
                    vs = [float(step_batch(r)) * len(r) for r in batches(stop_idx, 1024, None, False)]
                    val = sum(vs) / len(stop_idx)
                else:
                    val = total / max(n, 1)
            rec = {"epoch": epoch, "train_loss": total / max(n, 1), "stop_loss": val,
                   "seconds": round(time.time() - t0, 3)}
            log_fh.write(json.dumps(rec) + "\n")
            log_fh.flush()
            log(f"epoch {epoch:3d} train {rec['train_loss']:.4f} stop {val:.4f}")
            if not math.isfinite(rec["train_loss"]):
                raise FloatingPointError(f"training loss became {rec['train_loss']} at epoch {epoch}")
            if val < best - 1e-6:
                best, best_epoch, bad = val, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg["patience"]:
                    log(f"early stop at epoch {epoch} (best {best_epoch})")
                    break
            if time.time() - t0 > cfg["max_train_seconds"]:
                log("training time budget reached")
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"epochs_run": epoch + 1, "best_epoch": best_epoch, "best_stop_loss": best,
            "train_seconds": round(time.time() - t0, 3)}


@torch.no_grad()
def predict_queries(model, data: dict, split: str, cfg: dict, device: torch.device) -> np.ndarray:
    q, ctrls = data["queries"], data["controls"]
    qmask, qdose, qctx = q[f"{split}_mask"], q[f"{split}_dose"], q[f"{split}_context"]
    n_genes = ctrls["X"].shape[1]
    out = np.zeros((len(qctx), n_genes), dtype=np.float32)
    rng = np.random.default_rng(cfg["seed"] + 1)
    predict = getattr(model, "predict", model.forward)
    model.eval()
    for i in range(len(qctx)):
        pool = np.flatnonzero((ctrls["context"] == qctx[i]) & (ctrls["split"] == SPLIT_CODES[split]))
        if len(pool) == 0:
            pool = np.flatnonzero(ctrls["context"] == qctx[i])
        if len(pool) == 0:
            pool = np.arange(len(ctrls["context"]))
        if len(pool) > cfg["max_ctrl_per_query"]:
            pool = rng.choice(pool, size=cfg["max_ctrl_per_query"], replace=False)
        xc = torch.as_tensor(ctrls["X"][pool], dtype=torch.float32, device=device)
        pert = {
            "mask": torch.as_tensor(np.repeat(qmask[i : i + 1], len(pool), 0), device=device),
            "dose": torch.as_tensor(np.repeat(qdose[i : i + 1], len(pool), 0), device=device),
        }
        out[i] = predict(xc, pert).float().mean(0).cpu().numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    cfg = dict(DEFAULT_CONFIG)
    cfg.update(json.loads(args.config.read_text()))
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    # HARMONYCELL_THREADS (set by the backend from the CPU limit) wins; unset keeps torch's default
    threads = int(os.environ.get("HARMONYCELL_THREADS") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    device = pick_device(cfg["device"])
    t0 = time.time()
    data = load_data(args.data)
    module = load_model_module(args.model)
    meta = data["meta"]
    info = {
        "n_genes": len(meta["genes"]),
        "n_perts": len(meta["perts"]),
        "n_contexts": len(meta["contexts"]),
        "pert_features": torch.as_tensor(data["features"], dtype=torch.float32),
        # gene knowledge where the host had it; models must work without it
        "pert_features_go": None if data["features_go"] is None
        else torch.as_tensor(data["features_go"], dtype=torch.float32),
        "hparams": cfg.get("hparams", {}),
    }
    model = module.build_model(info).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"device {device}, {n_params} parameters, {len(data['train']['X'])} training cells")
    summary = train(model, data, cfg, device, args.out)
    for split in ("val", "test"):
        pred = predict_queries(model, data, split, cfg, device)
        if not np.isfinite(pred).all():
            raise FloatingPointError(f"{split} predictions contain NaN or inf")
        np.save(args.out / f"pred_{split}.npy", pred)
    summary.update({"device": str(device), "n_params": int(n_params), "threads": torch.get_num_threads(),
                    "total_seconds": round(time.time() - t0, 3),
                    # this process's peak resident memory (Linux reports kB), a cost, never a score
                    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    if device.type == "cuda":
        summary["peak_gpu_mem_bytes"] = int(torch.cuda.max_memory_allocated())
    (args.out / "harness_result.json").write_text(json.dumps(summary, indent=2))
    if cfg.get("save_model"):  # `harmonycell predict`: the fitted model, pickled whole (closed-form fits too)
        torch.save(model.cpu(), args.out / "model.pt")
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
