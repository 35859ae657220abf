"""Runs *inside* the sandbox (torch and numpy only): a fitted model answers new queries.

``harmonycell predict`` fits the selected model once with ``"save_model": true`` (the harness
pickles it to model.pt); this script loads it beside its model.py and predicts the queries in
``--queries`` (mask, dose, context codes), each from the control cells of its context, with the
harness's own ``predict_queries`` so that a query is answered exactly as the node answered its
held-out ones. With several ``--fit`` folders (the full refit, then its bootstrap members, all
over the same control cells) the first answers in ``pred.npy`` and the others in ``members.npy``
(members, queries, genes). Where ``queries.npz`` holds ``cell_ctrl`` (queries x N positions among
the control cells), the first fit also samples one cell per drawn control cell with its
``forward`` (a generative model's draw) into ``cells.npy`` (queries, N, genes).

Torch's generator is seeded before each fit answers, so a stochastic model answers the same query
the same way whether or not members are asked beside it.

Usage: python sandbox_predict.py --harness HARNESS --data DIR --fit FIT_DIR [FIT_DIR ...]
       --queries Q.npz --out DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch


def load_harness(path: Path):
    spec = importlib.util.spec_from_file_location("harmonycell_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def sample_cells(model, data: dict, q, seed: int, device: torch.device) -> np.ndarray:
    """One draw of the model (its ``forward``) from each drawn control cell of each query."""
    torch.manual_seed(seed)
    model.eval()
    ctrl_X = data["controls"]["X"]
    out = []
    for i, rows in enumerate(q["cell_ctrl"]):
        xc = torch.as_tensor(ctrl_X[rows], dtype=torch.float32, device=device)
        pert = {"mask": torch.as_tensor(np.repeat(q["mask"][i : i + 1], len(rows), 0), device=device),
                "dose": torch.as_tensor(np.repeat(q["dose"][i : i + 1], len(rows), 0), device=device)}
        cells = model(xc, pert).float().cpu().numpy()
        if not np.isfinite(cells).all():
            raise FloatingPointError("sampled cells contain NaN or inf")
        out.append(cells)
    return np.stack(out).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("harness", "data", "queries", "out"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    ap.add_argument("--fit", type=Path, nargs="+", required=True)
    args = ap.parse_args(argv)
    threads = int(os.environ.get("HARMONYCELL_THREADS") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    harness = load_harness(args.harness)
    data = harness.load_data(args.data)
    q = np.load(args.queries)
    # a new query is no split's: its controls are every control cell of its context, which the
    # harness takes for the split whose code every control carries here
    data["queries"] = {"new_mask": q["mask"], "new_dose": q["dose"], "new_context": q["context"]}
    data["controls"]["split"] = np.full(len(data["controls"]["split"]), -1, dtype=np.int8)
    harness.SPLIT_CODES["new"] = -1
    device = torch.device("cpu")
    answers = []
    for i, fit in enumerate(args.fit):
        cfg = dict(harness.DEFAULT_CONFIG)
        cfg.update(json.loads((fit / "config.json").read_text()))
        harness.load_model_module(fit / "model.py")  # the pickled model's class lives there
        model = torch.load(fit / "model.pt", map_location=device, weights_only=False)
        torch.manual_seed(cfg["seed"])
        pred = harness.predict_queries(model, data, "new", cfg, device)
        if not np.isfinite(pred).all():
            raise FloatingPointError(f"predictions of {fit} contain NaN or inf")
        answers.append(pred)
        if i == 0 and "cell_ctrl" in q.files:
            np.save(args.out / "cells.npy", sample_cells(model, data, q, int(q["cell_seed"]), device))
    pred = answers[0]
    np.save(args.out / "pred.npy", pred)
    if len(answers) > 1:
        np.save(args.out / "members.npy", np.stack(answers[1:]))
    print(f"[predict] {len(pred)} queries answered by {len(answers)} fit(s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
