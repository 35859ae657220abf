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
        for seg in BENCH_REFINEMENTS.get(b.split("/")[1], ()):  # closed-form fits: none
            path = f"{b}/{seg}"
            assert path in offered, f"{path} is not in the Planner's menu"
            out.append(path)
    return out


# ----------------------------------------------------------------------------- the table

def build_table(key: str, seed: int = 0, reverse: bool = False) -> dict:
    from models_doc import build_task
    from harmonycell.agents.cli.train import train_node
    from harmonycell.tools.data.taskdata import export_sandbox_data
    from harmonycell.tools.evaluation.baselines import compute_baselines
    from harmonycell.tools.evaluation.metrics import SEARCH_METRIC
    from harmonycell.tools.search.actions import closed_form
    from harmonycell.tools.search.knowledge import task_profile_text

    task = bench_tasks()[key]
    cache = CACHE / f"search_{key}.json"
    table = json.loads(cache.read_text()) if cache.exists() else {"task": key, "nodes": {}}
    shown = (SEARCH_METRIC, "DeltaPCC", "RMSE")
    with tempfile.TemporaryDirectory(prefix=f"bench-search-{key}-") as tmp:
        work = Path(tmp)
        adata = build_task(task, work, seed)
        data = work / "data"
        meta = export_sandbox_data(adata, data)
        unified = work / "unified.h5ad"  # written once, linked into each node's run
        adata.write_h5ad(unified)
        table.update({
            "title": task.title, "kind": task.kind, "seed": seed, "metric": SEARCH_METRIC,
            "cells": int(adata.n_obs), "genes": int(adata.n_vars), "train_cells": meta["n_train_cells"],
            "val_queries": len(meta["queries"]["val"]), "test_queries": len(meta["queries"]["test"]),
            "profile": task_profile_text(adata, task.kind),
            "epochs_cap": EPOCHS, "patience": PATIENCE,
            "baselines": {split: {name: {m: v.get(m) for m in shown}
                                  for name, v in compute_baselines(adata, split).baselines.items()}
                          for split in ("val", "test")},
        })
        actions = menu()[::-1] if reverse else menu()
        for action in actions:
            table["nodes"].update(_cached_nodes(cache))  # another worker may have added some
            if action in table["nodes"]:
                continue
            # carried as a search node is (agents.node_run); networks with the bench's patience cap
            path = action if closed_form(action) else f"{action}/hparams:patience={PATIENCE}"
            rep = train_node(unified, path, work / "nodes" / action.replace("/", "_").replace(":", "-"),
                             backend="local", seed=seed, data_dir=data, epochs=EPOCHS)
            row = {"status": rep.status, "wall_s": rep.wall_s, "cpu_s": rep.cpu_s,
                   "attempts": rep.attempts, "load_avg_1m": round(os.getloadavg()[0], 2)}
            if rep.status == "ok":
                row["val"] = {m: rep.val_metrics.get(m) for m in shown}
                row["test"] = {m: rep.metrics.get(m) for m in shown}
                row["epochs_run"] = rep.epochs_run
            else:
                row["error"] = (rep.error_tail or "")[-400:]
            table["nodes"][action] = row
            with _locked(cache):
                table["nodes"] = {**_cached_nodes(cache), **table["nodes"]}
                atomic.write_json(cache, table)
            v = (row.get("val") or {}).get(SEARCH_METRIC)
            print(f"[search-table] {key} {action}: {row['status']} wall {rep.wall_s}s val {v}", flush=True)
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
    from models_doc import build_task
    from harmonycell.agents.cli.train import train_node
    from harmonycell.tools.data.taskdata import export_sandbox_data

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-search-repeat-") as tmp:
        work = Path(tmp)
        adata = build_task(bench_tasks()[key], work, seed)
        export_sandbox_data(adata, work / "data")
        adata.write_h5ad(work / "unified.h5ad")
        for i in range(times):
            load = os.getloadavg()[0]
            rep = train_node(work / "unified.h5ad", f"{action}/hparams:patience={PATIENCE}", work / f"n{i}",
                             backend="local", seed=seed, data_dir=work / "data", epochs=EPOCHS, with_test=False)
            cpu = rep.cpu_s
            rows.append({"status": rep.status, "cpu_s": cpu, "wall_s": rep.wall_s,
                         "load_avg_1m_before": round(load, 2), "load_avg_1m_after": round(os.getloadavg()[0], 2)})
            print(f"[search-repeat] {key} {action} #{i}: cpu {cpu}s wall {rep.wall_s}s load {load:.1f}", flush=True)
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
