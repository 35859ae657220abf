"""Does the hierarchical search earn its name? Replay search policies against an exhaustive table.

    python bench/search.py table [--task K ...]   # train every node of the menu once (cached)
    python bench/search.py replay                 # policies x seeds against the tables -> results
    python bench/search.py --quick                # tiny synthetic table: exercises the code paths

1. ``table``: on each real task, every node of a finite action menu to depth 3 (paradigm ->
   backbone -> one refinement; the refinements are a fixed subset of the Planner's own menu,
   ``BENCH_REFINEMENTS``) is trained once through the sandbox (local backend, one torch thread,
   epochs capped) and scored on the host: validation (the search's reward) and test (what a
   user gets). Cached per node under bench/results/cache/ (git-ignored): a killed run resumes.
2. ``replay``: hierarchical MCTS (the Planner's own policy, ``harmonycell.agents.planner``), flat
   MCTS (every trainable path one level below the root), random search and greedy, 16 expansions
   each, over seeds, with rewards looked up in the table (the reward formula of the product,
   CPU time as the cost). Per expansion: the fraction of the exhaustive optimum (best validation
   metric in the table) reached so far; at the end, the TEST score of each policy's pick. Then
   warm start: the knowledge base filled from one task's table, expansions to reach 95% of the
   best on a related task, with and without it.

Results: bench/results/search.json and bench/results/search_<task>.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harmonycell.tools.record import atomic  # noqa: E402

ROOT = Path.cwd()
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache"
EPOCHS, PATIENCE = 20, 4  # caps: the whole table must train on a shared 2-core machine
EXPANSIONS = 16
# the finite menu below every backbone: a fixed subset of the Planner's menu (actions.expansions)
BENCH_REFINEMENTS = {
    "resnet": ("hparams:lr=0.003", "hparams:dropout=0", "loss:huber", "hparams:width=512"),
    "gated-mlp": ("hparams:lr=0.003", "hparams:dropout=0", "loss:huber", "hparams:depth=3"),
    "pathway-masked": ("hparams:lr=0.003", "hparams:dropout=0", "loss:huber", "hparams:n_modules=80"),
    "cvae": ("hparams:lr=0.003", "hparams:dropout=0", "loss:huber", "hparams:beta=0.15"),
    "flow-matching": ("hparams:lr=0.003", "hparams:dropout=0", "loss:huber", "hparams:sigma=0.3"),
}


def bench_tasks():
    from models_doc import TASKS, RealTask

    return {**TASKS, "kang_muscat": RealTask(
        "kang_muscat", "Kang 2018 PBMC IFN-beta, unseen cell type (muscat file: other schema)",
        "kang_muscat_example.h5ad", "unseen-cell-context")}


def menu() -> list[str]:
    """Every trainable node of the bench menu: backbones, then each backbone's refinements."""
    from harmonycell.tools.search.actions import all_backbone_paths, child_actions

    out = []
    for b in all_backbone_paths():
        out.append(b)
        offered = set(child_actions(b))
        for seg in BENCH_REFINEMENTS[b.split("/")[1]]:
            path = f"{b}/{seg}"
            assert path in offered, f"{path} is not in the Planner's menu"
            out.append(path)
    return out


# ----------------------------------------------------------------------------- the table

def build_table(key: str, seed: int = 0, reverse: bool = False) -> dict:
    from models_doc import build_task
    from harmonycell.sandbox.backends import get_backend
    from harmonycell.sandbox.training import run_training
    from harmonycell.tools.data.taskdata import export_sandbox_data, queries_from_meta
    from harmonycell.tools.evaluation.baselines import compute_baselines
    from harmonycell.tools.evaluation.metrics import SEARCH_METRIC
    from harmonycell.tools.evaluation.scoring import score_prediction_file
    from harmonycell.tools.search.codegen import generate
    from harmonycell.tools.search.knowledge import task_profile_text

    task = bench_tasks()[key]
    cache = CACHE / f"search_{key}.json"
    table = json.loads(cache.read_text()) if cache.exists() else {"task": key, "nodes": {}}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend = get_backend("local")
    with tempfile.TemporaryDirectory(prefix=f"bench-search-{key}-") as tmp:
        work = Path(tmp)
        adata = build_task(task, work, seed)
        data = work / "data"
        meta = export_sandbox_data(adata, data)
        table.update({
            "title": task.title, "kind": task.kind, "seed": seed, "metric": SEARCH_METRIC,
            "cells": int(adata.n_obs), "genes": int(adata.n_vars), "train_cells": meta["n_train_cells"],
            "val_queries": len(meta["queries"]["val"]), "test_queries": len(meta["queries"]["test"]),
            "profile": task_profile_text(adata, task.kind),
            "epochs_cap": EPOCHS, "patience": PATIENCE,
            "baselines": {split: {name: {m: v.get(m) for m in (SEARCH_METRIC, "DeltaPCC", "RMSE")}
                                  for name, v in compute_baselines(adata, split).baselines.items()}
                          for split in ("val", "test")},
        })
        actions = menu()[::-1] if reverse else menu()
        for action in actions:
            table["nodes"].update(_cached_nodes(cache))  # another worker may have added some
            if action in table["nodes"]:
                continue
            mc = generate(action, data, seed=seed)
            config = {**mc.config, "epochs": EPOCHS, "patience": PATIENCE}
            node = work / "nodes" / action.replace("/", "_").replace(":", "-")
            res = run_training(backend, data, mc.code, config, node, timeout_s=1800)
            row = {"status": res.status, "wall_s": res.wall_s, "cpu_s": res.cpu_s,
                   "load_avg_1m": round(os.getloadavg()[0], 2)}
            if res.ok and res.output("pred_val.npy") and res.output("pred_test.npy"):
                for split in ("val", "test"):
                    rep = score_prediction_file(adata, split, node / f"pred_{split}.npy",
                                                queries_from_meta(meta, split), genes=meta["genes"])
                    row[split] = {m: rep.aggregate.get(m) for m in (SEARCH_METRIC, "DeltaPCC", "RMSE")}
                h = json.loads((node / "harness_result.json").read_text())
                row["epochs_run"] = h.get("epochs_run")
            else:
                row["status"] = res.status if not res.ok else "error"
                row["error"] = (res.stderr_tail or res.stdout_tail)[-400:]
            table["nodes"][action] = row
            with _locked(cache):
                table["nodes"] = {**_cached_nodes(cache), **table["nodes"]}
                atomic.write_json(cache, table)
            v = (row.get("val") or {}).get(SEARCH_METRIC)
            print(f"[search-table] {key} {action}: {row['status']} cpu {res.cpu_s}s wall {res.wall_s}s "
                  f"val {v}", flush=True)
    table["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU"
    with _locked(cache):
        table["nodes"] = {**_cached_nodes(cache), **table["nodes"]}
        if all(a in table["nodes"] for a in menu()):
            table["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        atomic.write_json(cache, table)
    return table


def _cached_nodes(cache: Path) -> dict:
    return json.loads(cache.read_text()).get("nodes", {}) if cache.exists() else {}


class _locked:
    """Two workers may fill one task's table from both ends; writes are serialised by a lock."""

    def __init__(self, path: Path):
        self.path = path.with_suffix(".lock")

    def __enter__(self):
        import fcntl

        self.fh = open(self.path, "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self.fh.close()


def repeat_cost(key: str = "kang_muscat", action: str = "discriminative/resnet", times: int = 3,
                seed: int = 0) -> dict:
    """The same node trained several times while the shared machine's load varies: CPU seconds
    (the reward's cost) should stay put while wall seconds follow the load."""
    import warnings

    from models_doc import build_task
    from harmonycell.sandbox.backends import get_backend
    from harmonycell.sandbox.training import run_training
    from harmonycell.tools.data.taskdata import export_sandbox_data
    from harmonycell.tools.search.codegen import generate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend = get_backend("local")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-search-repeat-") as tmp:
        work = Path(tmp)
        adata = build_task(bench_tasks()[key], work, seed)
        export_sandbox_data(adata, work / "data")
        mc = generate(action, work / "data", seed=seed)
        config = {**mc.config, "epochs": EPOCHS, "patience": PATIENCE}
        for i in range(times):
            load = os.getloadavg()[0]
            res = run_training(backend, work / "data", mc.code, config, work / f"n{i}", timeout_s=1800)
            rows.append({"status": res.status, "cpu_s": res.cpu_s, "wall_s": res.wall_s,
                         "load_avg_1m_before": round(load, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)})
            print(f"[search-repeat] {key} {action} #{i}: cpu {res.cpu_s}s wall {res.wall_s}s load {load:.1f}", flush=True)
    out = {"task": key, "action": action, "epochs_cap": EPOCHS, "runs": rows}
    atomic.write_json(CACHE / "search_repeat.json", out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", nargs="?", choices=("table", "repeat", "replay", "all"), default="all")
    ap.add_argument("--task", action="append", help="table: these tasks (default: all)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reverse", action="store_true", help="table: walk the menu from its end (a second worker)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HARMONYCELL_THREADS", "1")
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.step in ("table", "all"):
        for key in args.task or list(bench_tasks()):
            build_table(key, reverse=args.reverse)
    if args.step == "repeat":
        repeat_cost()
    if args.step in ("replay", "all"):
        from search_replay import replay_all

        replay_all(args.seeds, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
