"""The expert-derived backbones and their variants on the synthetic unseen-perturbation task, beside
resnet, each trained through the sandbox and scored by the host (`harmonycell train --json`).

    python bench/backbone_synthetic.py   -> prints a table, writes bench/results/backbone_synthetic.json

This is the measurement behind two defaults of the action space: set-transformer's energy distance
is off (``energy_weight`` 0), and each backbone must learn perturbation-specific effects with the
short settings the tests use (25 epochs, early-stopping patience 5).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "backbone_synthetic.json"
SHORT = "epochs=25,width=96,patience=5"
PATHS = (
    f"discriminative/resnet/hparams:{SHORT}",
    f"discriminative/attribute-decoder/hparams:{SHORT}",
    f"discriminative/set-transformer/hparams:{SHORT}",
    f"discriminative/set-transformer/hparams:{SHORT},energy_weight=0.01",
    f"discriminative/set-transformer/hparams:{SHORT},energy_weight=0.1",
)
METRICS = ("DeltaPCC", "PCC_Delta_shift_corrected")


def make_task(root: Path) -> Path:
    from harmonycell.tools.data.synthetic import SimConfig, write_synthetic
    from harmonycell.tools.data.unify import unify, write_unify_outputs

    cfg = SimConfig(n_genes=200, n_programs=6, program_size=25, n_perturbed_genes=30, n_combos=0,
                    cells_per_condition=30, n_controls=400, seed=3)
    write_unify_outputs(unify(write_synthetic(root / "raw", cfg), "unseen-perturbation", 0), root / "task")
    return root / "task"


def train(task: Path, action: str, node: Path) -> dict:
    env = {**os.environ, "HARMONYCELL_THREADS": "1"}
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "harmonycell.agents.cli", "train", str(task), "--action", action,
                          "--backend", "bwrap", "--json", "--out", str(node)],
                         capture_output=True, text=True, env=env, check=True)
    rep = json.loads(res.stdout)
    return {"action": action, "wall_s": round(time.time() - t0, 1), "epochs_run": rep["epochs_run"],
            "best_epoch": rep["best_epoch"], **{m: rep["metrics"][m] for m in METRICS},
            "train_mean": {m: rep["baselines"]["train_mean"][m] for m in METRICS}}


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        task = make_task(Path(tmp))
        for i, action in enumerate(PATHS):
            rows.append(train(task, action, Path(tmp) / f"node{i}"))
            r = rows[-1]
            print(f"{action:75s} DeltaPCC {r['DeltaPCC']:.3f} shift-corrected {r['PCC_Delta_shift_corrected']:.3f} "
                  f"epochs {r['epochs_run']} (best {r['best_epoch']}) {r['wall_s']} s", flush=True)
    print(f"train_mean baseline: DeltaPCC {rows[0]['train_mean']['DeltaPCC']:.3f}")
    from harmonycell.tools.record import atomic

    atomic.write_json(OUT, {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                            "task": "synthetic unseen perturbation (SimConfig seed 3, 200 genes, split seed 0)",
                            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows})
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
