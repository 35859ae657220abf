"""Time to a good answer: how long a default search takes to hold a node at least as good, on
validation, as the best baseline -- with the closed-form `simple` paradigm first (today) and
without it (the search before it existed: `exclude: [simple]`), in one invocation.

    python bench/time_to_good.py [--task papalexi --task norman] [--budget 6] [--time-limit 10m]

Each arm is a real run (`harmonycell run`'s driver: audit, unify, search through the sandbox,
test), knowledge base off so neither arm reads the other. The yardstick is every baseline's
headline on the same run's validation split (its declared fallback where the headline is
undefined), computed on the host; the clock starts at the search's first NodePlan and stops at
the first NodeScored whose validation value reaches it. Writes bench/results/time_to_good.json
with the load average before each arm (timings count only below 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harmonycell.tools.record import atomic  # noqa: E402

RESULTS = Path.cwd() / "bench" / "results"
ARMS = {"with simple models first": [], "without them (before)": ["simple"]}


def _ts(rec: dict) -> float:
    return datetime.fromisoformat(rec["ts"]).timestamp()


def yardstick(run_root: Path) -> tuple[str, float | None, str | None]:
    """(metric, best baseline value on validation, which baseline) in the headline's direction."""
    import anndata as ad

    from harmonycell.tools.evaluation.baselines import compute_baselines
    from harmonycell.tools.evaluation.ceiling import NOISE_CEILING
    from harmonycell.tools.evaluation.metrics import FALLBACK_METRIC, SEARCH_METRIC, oriented

    base = compute_baselines(ad.read_h5ad(run_root / "unify" / "unified.h5ad"), "val").baselines
    base = {n: v for n, v in base.items() if n != NOISE_CEILING}
    on_headline = any(v.get(SEARCH_METRIC) is not None for v in base.values())
    metric = SEARCH_METRIC if on_headline else FALLBACK_METRIC
    scored = {n: v.get(metric) for n, v in base.items() if v.get(metric) is not None}
    if not scored:
        return metric, None, None
    best = max(scored, key=lambda n: oriented(metric, scored[n]))
    return metric, scored[best], best


def time_to_good(run_root: Path) -> dict:
    from harmonycell.tools.evaluation.metrics import oriented
    from harmonycell.tools.record.transcript import read_records

    recs = list(read_records(run_root / "transcript.jsonl"))
    metric, bar, which = yardstick(run_root)
    plans = [r for r in recs if r["kind"] == "message" and r["type"] == "NodePlan"]
    scored = [r for r in recs if r["kind"] == "message" and r["type"] == "NodeScored"]
    out = {"metric": metric, "best_baseline": which, "best_baseline_val": bar, "nodes": len(scored),
           "search_s": round(_ts(recs[-1]) - _ts(plans[0]), 1) if plans else None,
           "first_node": plans[0]["content"]["action"] if plans else None,
           "reached_by": None, "seconds_to_good": None}
    if not plans or bar is None:
        return out
    t0 = _ts(plans[0])
    actions = {p["content"]["node_id"]: p["content"]["action"] for p in plans}
    for r in scored:
        v = r["content"]["metrics"].get(metric)
        if v is not None and oriented(metric, v) >= oriented(metric, bar):
            out.update(reached_by=actions.get(r["content"]["node_id"]), node_val=v,
                       seconds_to_good=round(_ts(r) - t0, 1))
            break
    return out


def one_arm(src: Path, kind: str, exclude: list[str], out: Path, budget: int, time_limit: str) -> dict:
    from harmonycell.agents.cli.drive import drive
    from harmonycell.tools.record.runfolder import create_run
    from harmonycell.tools.search.budget import parse_duration

    load = os.getloadavg()[0]
    run = create_run(out, [src], kind, budget_nodes=budget, time_limit_s=parse_duration(time_limit),
                     use_kb=False, backend="auto", exclude=exclude)
    t0 = time.perf_counter()
    drive(run)
    return {"exclude": exclude, "load_avg_1m_before": round(load, 2), "run_s": round(time.perf_counter() - t0, 1),
            **time_to_good(run.root)}


def main(argv: list[str] | None = None) -> int:
    from models_doc import REAL, TASKS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", action="append", choices=("papalexi", "norman"))
    ap.add_argument("--budget", type=int, default=6)
    ap.add_argument("--time-limit", default="10m")
    args = ap.parse_args(argv)
    os.environ.setdefault("HARMONYCELL_THREADS", "1")
    results = {"what": __doc__.splitlines()[0], "budget": args.budget, "time_limit": args.time_limit,
               "machine": f"{os.cpu_count()} CPU cores, no GPU", "tasks": {}}
    with tempfile.TemporaryDirectory(prefix="bench-ttg-") as tmp:
        for key in args.task or ["papalexi", "norman"]:
            task = TASKS[key]
            src = REAL / task.file
            if task.subset:  # written outside the repository, as models_doc does
                import anndata as ad

                col, val = task.subset
                full = ad.read_h5ad(src)
                src = Path(tmp) / f"{key}.h5ad"
                full[full.obs[col].astype(str) == val].copy().write_h5ad(src)
            arms = {}
            for name, exclude in ARMS.items():
                arms[name] = one_arm(src, task.kind, exclude, Path(tmp) / key / name.split()[0], args.budget,
                                     args.time_limit)
                print(f"[time-to-good] {key} {name}: {arms[name]['seconds_to_good']} s "
                      f"(reached by {arms[name]['reached_by']}; load {arms[name]['load_avg_1m_before']})",
                      flush=True)
            results["tasks"][key] = {"title": task.title, "arms": arms}
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    atomic.write_json(RESULTS / "time_to_good.json", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
