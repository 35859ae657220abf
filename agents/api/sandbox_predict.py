"""Runs *inside* the sandbox (torch and numpy only): a fitted model answers new queries.

``harmonycell predict`` fits the selected model once with ``"save_model": true`` (the harness
pickles it to model.pt); this script loads it beside its model.py and predicts the queries in
``--queries`` (mask, dose, context codes), each from the control cells of its context, with the
harness's own ``predict_queries`` so that a query is answered exactly as the node answered its
held-out ones.

Usage: python sandbox_predict.py --harness HARNESS --data DIR --fit FIT_DIR --queries Q.npz --out DIR
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("harness", "data", "fit", "queries", "out"):
        ap.add_argument(f"--{name}", type=Path, required=True)
    args = ap.parse_args(argv)
    threads = int(os.environ.get("HARMONYCELL_THREADS") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    harness = load_harness(args.harness)
    cfg = dict(harness.DEFAULT_CONFIG)
    cfg.update(json.loads((args.fit / "config.json").read_text()))
    data = harness.load_data(args.data)
    q = np.load(args.queries)
    # a new query is no split's: its controls are every control cell of its context, which the
    # harness takes for the split whose code every control carries here
    data["queries"] = {"new_mask": q["mask"], "new_dose": q["dose"], "new_context": q["context"]}
    data["controls"]["split"] = np.full(len(data["controls"]["split"]), -1, dtype=np.int8)
    harness.SPLIT_CODES["new"] = -1
    harness.load_model_module(args.fit / "model.py")  # the pickled model's class lives there
    device = torch.device("cpu")
    model = torch.load(args.fit / "model.pt", map_location=device, weights_only=False)
    pred = harness.predict_queries(model, data, "new", cfg, device)
    if not np.isfinite(pred).all():
        raise FloatingPointError("predictions contain NaN or inf")
    np.save(args.out / "pred.npy", pred)
    print(f"[predict] {len(pred)} queries answered", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
