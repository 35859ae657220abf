"""Latency of `harmonycell predict` on Papalexi: the first call (refit), later calls (the kept fit).

Also the first call with the spread's bootstrap members against the first call without them
(`--members K` vs `--members 1`, the same invocation otherwise), each on its own copy of the run as
it finished (no kept fit), so both pay the full refit.

Runs `harmonycell run` on the real Papalexi ECCITE-seq screen (or takes a finished run folder),
then times `harmonycell predict` as a person calls it (a fresh process each time, so Python's
start and imports are in the number), and `hc.predict` in one Python process (what a notebook
pays), and writes bench/results/predict.json. The load average before is recorded: on a shared
machine it moves every number.

    python bench/predict.py [--out /tmp/hc-bench-predict] [--run RUN_DIR] [--budget 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data" / "real" / "papalexi_eccite_lowmoi.h5ad").resolve()
RESULT = REPO / "bench" / "results" / "predict.json"
CLI = [sys.executable, "-m", "harmonycell.agents.cli"]
NEW_GENE = "JAK1"  # neither perturbed nor measured in Papalexi: read from gene knowledge
MEASURED = "STAT2"  # measured, and perturbed: an input of the first refit already
OUTSIDE = "TYK2"  # a second gene outside the kept fit's inputs: a second refit


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[3:])} failed: {proc.stderr[-2000:]}")
    return round(time.monotonic() - t0, 2), proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/hc-bench-predict"))
    ap.add_argument("--run", type=Path, default=None, help="a finished Papalexi run (default: run one)")
    ap.add_argument("--budget", type=int, default=3)
    args = ap.parse_args()
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load_before = [round(x, 2) for x in os.getloadavg()]
    run_s = None
    if args.run is None:
        before = set(args.out.iterdir()) if args.out.exists() else set()
        run_s, _ = timed([*CLI, "run", str(DATA), "--task", "unseen-perturbation", "--out", str(args.out),
                          "--budget", str(args.budget), "--no-kb"])
        (args.run,) = [p for p in args.out.iterdir() if p not in before and (p / "verdict.json").exists()]
    import harmonycell as hc
    from harmonycell.tools.data.taskdata import load_meta

    from harmonycell.uncertainty import default_members

    run = hc.load_run(args.run)
    held_out = load_meta(args.run / "data" / "sandbox")["queries"]["test"][0]["condition"]
    k = default_members(run.search_tree.nodes[run.selected].action)
    first = {}
    for members in (1, k):
        fresh = args.out / f"{args.run.name}-members-{members}"
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(args.run, fresh, ignore=lambda d, names: ["predict"] if Path(d) == args.run else [])
        first[f"members_{members}_s"], _ = timed([*CLI, "predict", str(fresh), "-p", NEW_GENE,
                                                  "--members", str(members)])
        shutil.rmtree(fresh)
    cli = {}
    cli["first_call_with_refit_s"], _ = timed([*CLI, "predict", str(args.run), "-p", NEW_GENE])
    cli["same_gene_again_s"], _ = timed([*CLI, "predict", str(args.run), "-p", NEW_GENE])
    cli["another_gene_kept_fit_s"], _ = timed([*CLI, "predict", str(args.run), "-p", MEASURED])
    cli["gene_outside_the_fit_refits_s"], _ = timed([*CLI, "predict", str(args.run), "-p", OUTSIDE])
    cli["no_refit_held_out_gene_s"], _ = timed([*CLI, "predict", str(args.run), "-p", held_out, "--no-refit"])
    in_process = []
    for gene in (NEW_GENE, MEASURED, OUTSIDE):
        t0 = time.monotonic()
        pred = run.predict(gene)
        in_process.append({"gene": gene, "s": round(time.monotonic() - t0, 2), "fit": pred.uns["harmonycell"]["model"]["fit"]})
    fits = sorted(p.name for p in (args.run / "predict").iterdir() if p.name != "calls")
    result = {
        "what": "wall time of `harmonycell predict` (fresh process per call) and of hc.predict in one process, "
                "on a Papalexi run; the first call refits the selected model on every labelled unit",
        "data": DATA.name, "run": str(args.run), "run_s": run_s, "selected": run.selected,
        "action": run.search_tree.nodes[run.selected].action, "cli": cli, "in_process": in_process,
        "first_call_members": {"what": f"first `harmonycell predict RUN -p {NEW_GENE} --members K` on a copy of the "
                                       "finished run with no kept fit: K=1 refits once (no spread), the default K "
                                       "also fits K bootstrap members", "default_members": k, **first},
        "fits_kept": fits, "uptime_before": uptime_before, "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.platform(), "cpus": os.cpu_count(),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
