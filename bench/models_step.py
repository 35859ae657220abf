"""Seconds per training step of every backbone (batch 128, 500 genes, 60 perturbations), with
one torch thread and with torch's default thread count, measured in the same run.

    python bench/models_step.py     -> prints a table, writes bench/results/models_step.json

The ratio default/1-thread shows whether the sandbox should pin HARMONYCELL_THREADS on this host
(on a 2-core machine shared with other work, oversubscription can cost 10x or more).
"""

import json
import os
import platform
import time
import types
from pathlib import Path

import torch

from harmonycell.tools.search import codegen
from harmonycell.tools.search.actions import all_backbone_paths, parse_action

G, P, B, STEPS = 500, 60, 128, 10


def step_seconds(path: str, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    action = parse_action(path)
    mod = types.ModuleType("bench_model")
    exec(compile(codegen.render(action), "model.py", "exec"), mod.__dict__)
    info = {"n_genes": G, "n_perts": P, "n_contexts": 1, "pert_features": torch.randn(P, 11),
            "hparams": action.training_config()["hparams"]}
    model = mod.build_model(info)
    opt = torch.optim.AdamW(model.parameters())
    x, y = torch.rand(B, G), torch.rand(B, G)
    pert = {"mask": torch.nn.functional.one_hot(torch.randint(0, P, (B,)), P).float(), "dose": torch.ones(B, P)}
    loss_fn = getattr(model, "loss", None) or (lambda a, p, t: torch.nn.functional.mse_loss(model(a, p), t))

    def one():
        opt.zero_grad()
        loss_fn(x, pert, y).backward()
        opt.step()

    one()
    t0 = time.perf_counter()
    for _ in range(STEPS):
        one()
    return (time.perf_counter() - t0) / STEPS


def main() -> None:
    default = torch.get_num_threads()
    rows = []
    for path in all_backbone_paths():
        one, dflt = step_seconds(path, 1), step_seconds(path, default)
        rows.append({"action": path, "s_per_step_1_thread": round(one, 4),
                     f"s_per_step_{default}_threads": round(dflt, 4), "ratio_default_over_1": round(dflt / one, 2)})
        print(f"{path:32s} 1 thread {one:.4f} s/step   {default} threads {dflt:.4f} s/step   ratio {dflt / one:.2f}")
    out = Path("bench/results/models_step.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cores",
                               "load_avg": os.getloadavg(), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
