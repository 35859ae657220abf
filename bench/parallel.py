"""Nodes per hour with several nodes at once, on one machine and on Ray, and what it buys.

One invocation runs the same real task (default: Norman 2019, the perturbench devel file,
unseen perturbation) under the same time limit, seed and sandbox three ways, one after another:

  local-1x2  one worker, two torch threads (the default `harmonycell run`)
  local-2x1  `--workers 2`: two nodes at once, one core each
  ray-2x1    `--executor ray --workers 2`: a local Ray instance started for the run

and reports, from each run's transcript and tree: nodes finished per hour of search, Ray's
added overhead per node (median of the executor's time minus the sandbox's own wall time, beside
the local executor's in the same invocation), and the best validation score reached after
T minutes for one vs two workers. Ratios are between configurations of this invocation.

    python bench/parallel.py [--minutes 5] [--epochs 30] [--backend bwrap] [--out /tmp/hc-bench-parallel]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / ".." / "shared" / "data" / "real"
RESULTS = REPO / "bench" / "results"
CLI = [sys.executable, "-m", "harmonycell.agents.cli"]
CONFIGS = {
    "local-1x2": ["--workers", "1"],
    "local-2x1": ["--workers", "2"],
    "ray-2x1": ["--executor", "ray", "--workers", "2"],
}


def _ts(rec: dict) -> float:
    return datetime.fromisoformat(rec["ts"]).timestamp()


def summarise(run_dir: Path, minutes: float) -> dict:
    """Throughput, overheads and the best-so-far curve of one run, from its own records."""
    from harmonycell.tools.evaluation.metrics import SEARCH_METRIC, oriented

    recs = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]
    tree = json.loads((run_dir / "tree.json").read_text())["nodes"]
    plans = [r for r in recs if r["type"] == "NodePlan"]
    t0 = _ts(plans[0])
    done = [r for r in recs if r["type"] in ("NodeScored", "NodeAbandoned")]
    end = max(_ts(r) for r in done)
    runs = [r["content"]["result"] for r in recs if r["type"] == "sandbox.run_training"]
    best, curve = None, []
    for r in done:  # best validation score so far, in the order results arrived
        val = tree[r["content"]["node_id"]].get("val_metric")
        if val is not None and (best is None or oriented(SEARCH_METRIC, val) > oriented(SEARCH_METRIC, best)):
            best = val
        curve.append({"minutes": round((_ts(r) - t0) / 60, 2), "best_val": best})
    within = [c for c in curve if c["minutes"] <= minutes]
    return {
        "nodes": len(done),
        "nodes_within_limit": len(within),
        "search_minutes": round((end - t0) / 60, 2),
        "nodes_per_hour": round(len(done) / ((end - t0) / 3600), 1),
        "overhead_s_median": round(statistics.median(r.get("overhead_s", 0.0) for r in runs), 3),
        "sandbox_wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 1),
        "sandbox_cpu_s_median": round(statistics.median(r["cpu_s"] or 0.0 for r in runs), 1),
        "best_val_at_limit": within[-1]["best_val"] if within else None,
        "curve": curve,
        "where": sorted({r.get("where", "this machine") for r in runs}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REAL / "norman_mcfaline_perturbench_devel.h5ad")
    ap.add_argument("--minutes", type=float, default=5.0, help="time limit of each search (T)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--backend", default="bwrap")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/hc-bench-parallel"))
    ap.add_argument("--from-runs", action="store_true",
                    help="re-read the run folders under --out instead of running (same tables)")
    args = ap.parse_args()
    load0 = [round(x, 2) for x in os.getloadavg()]
    out: dict = {"what": __doc__.splitlines()[0], "data": args.data.name, "minutes": args.minutes,
                 "epochs": args.epochs, "backend": args.backend, "machine": platform.platform(),
                 "cpus": os.cpu_count(), "configs": {}}
    for name in args.configs.split(","):
        root = args.out / name
        cmd = [*CLI, "run", str(args.data), "--out", str(root), "--time-limit", f"{args.minutes}m",
               "--budget", "64", "--epochs", str(args.epochs), "--backend", args.backend, "--no-kb",
               "--seed", "0", *CONFIGS[name]]
        t0 = time.monotonic()
        if not args.from_runs:
            print(f"[{name}] {' '.join(cmd[3:])}", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        run_dir = max((p for p in root.iterdir() if (p / "task.yaml").exists()), key=lambda p: p.stat().st_mtime)
        s = summarise(run_dir, args.minutes)
        s["run"] = str(run_dir)
        if not args.from_runs:
            s["wall_s"] = round(time.monotonic() - t0, 1)
        out["configs"][name] = s
        print(f"[{name}] {s['nodes']} nodes, {s['nodes_per_hour']} nodes/h, overhead median "
              f"{s['overhead_s_median']} s, best val at {args.minutes} min {s['best_val_at_limit']}", flush=True)
    c = out["configs"]
    ratios = {}
    if "local-1x2" in c and "local-2x1" in c:
        ratios["nodes_per_hour_2x1_over_1x2"] = round(c["local-2x1"]["nodes_per_hour"] / c["local-1x2"]["nodes_per_hour"], 2)
    if "ray-2x1" in c and "local-2x1" in c:
        ratios["nodes_per_hour_ray_over_local_2x1"] = round(c["ray-2x1"]["nodes_per_hour"] / c["local-2x1"]["nodes_per_hour"], 2)
        ratios["ray_added_overhead_s_per_node"] = round(c["ray-2x1"]["overhead_s_median"] - c["local-2x1"]["overhead_s_median"], 3)
    out["ratios"] = ratios
    if args.from_runs and (RESULTS / "parallel.json").exists():  # keep what only the live run knew
        old = json.loads((RESULTS / "parallel.json").read_text())
        out["load_before"], out["load_after"] = old.get("load_before"), old.get("load_after")
        for name, s in c.items():
            s.setdefault("wall_s", old.get("configs", {}).get(name, {}).get("wall_s"))
    else:
        out["load_before"], out["load_after"] = load0, [round(x, 2) for x in os.getloadavg()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "parallel.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["| configuration | nodes | nodes/hour | sandbox wall s (median) | sandbox CPU s (median) | "
             f"executor overhead s (median) | best val after {args.minutes:g} min |", "|---|---|---|---|---|---|---|"]
    for name, s in c.items():
        best = "n/a" if s["best_val_at_limit"] is None else f"{s['best_val_at_limit']:.4f}"
        lines.append(f"| {name} | {s['nodes']} | {s['nodes_per_hour']} | {s['sandbox_wall_s_median']} | "
                     f"{s['sandbox_cpu_s_median']} | {s['overhead_s_median']} | {best} |")
    lines += ["", f"Load average before / after: {out['load_before']} / {out['load_after']} on {out['cpus']} cores."]
    (RESULTS / "parallel.md").write_text("\n".join(lines) + "\n\n" + json.dumps(ratios) + "\n")
    print("\n".join(lines))
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
