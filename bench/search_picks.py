"""The search's pick beside every baseline: `harmonycell run --folds K` on each real task with
held-out units, the pooled comparisons the cross-validation report prints, and which node each
fold's search picked -- the numbers docs/models.md quotes under "HarmonyCell's pick".

    python bench/search_picks.py [--task kang ...] [--folds 3] [--budget 4] [--time-limit 4m]

Each fold is a complete run (audit, unify with that fold's units held out, search, test, Judge)
with the knowledge base off, so no fold reads another's search. Results:
bench/results/search_picks.json (per task; a task run again replaces its entry).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harmonycell.tools.record import atomic  # noqa: E402

RESULTS = Path.cwd() / "bench" / "results" / "search_picks.json"


def picks(parent: Path) -> list[dict]:
    """What each fold's search picked (``Tree.pick``: the simplest candidate, a node or the
    ensemble of the best nodes, within one standard error of the best on validation), beside the
    best on validation, read from its tree and verdict."""
    from harmonycell.tools.search.tree import ENSEMBLE_ID, Tree

    out = []
    for fold in sorted(p for p in parent.iterdir() if (p / "verdict.json").exists()):
        tree = Tree.load(fold / "tree.json")
        pick, best, ens = tree.pick(), tree.best(), tree.ensemble
        label = (f"ensemble of {' + '.join(ens.actions)} (weights {', '.join(f'{w:.2f}' for w in ens.weights)})"
                 if pick == ENSEMBLE_ID else tree.describe(pick))
        out.append({"fold": fold.name, "pick": label, "pick_id": pick, "nodes": len(tree.trained()),
                    "best_node": best.action if best else None, "best_node_val": best.val_metric if best else None,
                    "ensemble": ({"members": ens.members, "actions": ens.actions, "weights": ens.weights,
                                  "val_metric_name": ens.val_metric_name, "val_cross_fitted": ens.val_metric}
                                 if ens else {"why_none": tree.ensemble_note}),
                    # the one-standard-error rule's record (None: the search ended before the rule)
                    "pick_rule": tree.pick_rule.model_dump() if tree.pick_rule else None,
                    "verdict": json.loads((fold / "verdict.json").read_text())["headline"]})
    return out


def one_task(key: str, folds: int, budget: int, time_limit: str, work: Path) -> dict:
    from models_doc import REAL, TASKS

    from harmonycell.agents.cli.crossval import run_folds
    from harmonycell.agents.cli.drive import drive
    from harmonycell.tools.search.budget import parse_duration

    task = TASKS[key]
    src = REAL / task.file
    if task.subset:  # written outside the repository
        import anndata as ad

        col, val = task.subset
        full = ad.read_h5ad(src)
        src = work / f"{key}.h5ad"
        full[full.obs[col].astype(str) == val].copy().write_h5ad(src)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    parent, line = run_folds([src], task.kind, work / key, folds, 1, 0, drive, budget_nodes=budget,
                             time_limit_s=parse_duration(time_limit), use_kb=False)
    cv = json.loads((parent / "cv.json").read_text())
    return {"title": task.title, "kind": task.kind, "folds": folds, "budget": budget, "time_limit": time_limit,
            "verdict": line, "n_queries": cv["n_queries"], "spread": cv["spread"], "comparisons": cv["comparisons"],
            "picks": picks(parent), "seconds": round(time.perf_counter() - t0, 1), "load_avg_1m_before": round(load, 2),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    from models_doc import TASKS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", action="append", choices=sorted(TASKS))
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--time-limit", default="4m")
    args = ap.parse_args(argv)
    os.environ.setdefault("HARMONYCELL_THREADS", "1")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory(prefix="bench-picks-") as tmp:
        for key in args.task or list(TASKS):
            results[key] = one_task(key, args.folds, args.budget, args.time_limit, Path(tmp))
            atomic.write_json(RESULTS, results)
            print(f"[search-picks] {key}: {results[key]['verdict']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
