"""Expert models beside HarmonyCell's pick, on the same cells, splits, queries and metrics.

    python bench/experts.py                       # every task x seed x expert, then docs/experts.md
    python bench/experts.py --tasks norman --seeds 0 --experts biolord
    python bench/experts.py --render              # only re-render docs/experts.md from results

For each task and split seed, a HarmonyCell run (builtin policies) makes the task: its run folder
holds the unified data (host only), the sandbox folder (training cells, controls, queries,
features) and the selected node. Each expert gets a virtual environment of its own
(``.cache/experts/<name>/venv``, made here, so the product's pins never bend to an expert's),
reads the same sandbox folder through a small adapter (``bench/expert_adapters/``) and writes
``pred_test.npy`` in the sandbox's format. The host then scores every prediction (ours, each
expert's, each baseline's) with the same scorer and compares them per query, paired, with a
seeded bootstrap interval. An expert that cannot be installed or run here is listed with the
exact reason. Results: ``bench/results/experts.json``; table: ``docs/experts.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / ".." / "shared" / "data" / "real"
CACHE = REPO / ".cache" / "experts"
RESULTS = REPO / "bench" / "results" / "experts.json"
DOC = REPO / "docs" / "experts.md"
ADAPTERS = REPO / "bench" / "expert_adapters"
TORCH = "torch==2.13.0"  # the CPU build on this machine; an expert's venv never pulls CUDA torch
METRICS = ("PCC_Delta_shift_corrected", "DeltaPCC", "RMSE")


@dataclass(frozen=True)
class Expert:
    name: str
    paper: str
    requirements: tuple[str, ...]
    adapter: str | None  # file in bench/expert_adapters, None when it cannot run here
    why_not: str = ""     # the reason, when it is known not to run offline on CPU
    pip_args: tuple[str, ...] = field(default_factory=tuple)


EXPERTS = {e.name: e for e in (
    Expert("biolord", "Piran et al., Nature Biotechnology 2024", ("biolord==0.0.3",), "biolord_adapter.py"),
    # STATE trains by optimiser steps: its adapter turns --epochs into passes over the cells
    # (sets of 16 cells, 8 sets a step), capped at 1500 steps on CPU
    Expert("state", "Adduri et al. (Arc Institute), bioRxiv 2025", ("arc-state==0.11.1",), "state_adapter.py"),
    Expert("cpa", "Lotfollahi et al., Molecular Systems Biology 2023", ("cpa-tools==0.8.1",), None,
           why_not="cpa-tools 0.8.1 requires torch>1.8,<2.0; the only torch here is 2.13.0 (CPU), "
                   "and torch 1.x from the registry is the CUDA build (several GB of nvidia packages)"),
    Expert("gears", "Roohani et al., Nature Biotechnology 2023", ("cell-gears==0.1.2",), None,
           why_not="GEARS downloads its gene-ontology graph and gene list from a web server at run "
                   "time (dataverse); this machine reaches only package registries"),
)}


@dataclass(frozen=True)
class Task:
    key: str
    title: str
    files: tuple[str, ...]
    kind: str
    subset: tuple[str, str] | None = None  # keep only these cells of the (single) input


TASKS = {t.key: t for t in (
    Task("norman", "Norman 2019 K562 CRISPRa, unseen perturbation (perturbench devel file)",
         ("norman_mcfaline_perturbench_devel.h5ad",), "unseen-perturbation", ("dataset", "norman19")),
    Task("papalexi", "Papalexi 2021 THP-1 ECCITE-seq, unseen perturbation",
         ("papalexi_eccite_lowmoi.h5ad",), "unseen-perturbation"),
    Task("kang", "Kang 2018 PBMC IFN-beta, unseen cell type (the two Kang files)",
         ("kang_scgen_valid.h5ad", "kang_muscat_example.h5ad"), "unseen-cell-context"),
)}


def tail(text: str, n: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def ensure_venv(expert: Expert) -> tuple[Path | None, str]:
    """The expert's own interpreter, or None and the exact install error."""
    home = CACHE / expert.name
    py = home / "venv" / "bin" / "python"
    ok = home / "installed.json"
    if ok.exists() and py.exists():
        return py, ""
    if expert.adapter is None:
        return None, expert.why_not
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
    (home / "constraints.txt").write_text(TORCH + "\n")
    for reqs in ((TORCH,), expert.requirements):
        res = subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(home / "constraints.txt"),
                              *expert.pip_args, *reqs], capture_output=True, text=True)
        if res.returncode != 0:
            return None, f"pip install {' '.join(reqs)} failed: {tail(res.stderr)}"
    freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    ok.write_text(json.dumps({"requirements": expert.requirements, "freeze": freeze.splitlines()}))
    return py, ""


def task_inputs(task: Task) -> list[Path]:
    if task.subset is None:
        return [REAL / f for f in task.files]
    import anndata as ad

    (src,) = [REAL / f for f in task.files]
    out = CACHE / "inputs" / f"{task.key}.h5ad"  # outside the repository's tracked files
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        full = ad.read_h5ad(src)
        col, val = task.subset
        full[full.obs[col].astype(str) == val].copy().write_h5ad(out)
    return [out]


def harmonycell_run(task: Task, seed: int, budget: int, epochs: int, backend: str = "auto") -> Path:
    """A finished HarmonyCell run of the task (reused when one already finished)."""
    root = CACHE / "runs" / f"{task.key}-s{seed}"
    done = [p.parent for p in root.glob("*/verdict.json")]
    if done:
        return done[0]
    cmd = [sys.executable, "-m", "harmonycell.agents.cli", "run", *map(str, task_inputs(task)), "--task", task.kind,
           "--seed", str(seed), "--budget", str(budget), "--epochs", str(epochs), "--out", str(root),
           "--backend", backend, "--no-kb"]  # a benchmark neither reads nor writes the user's knowledge base
    t0 = time.time()
    subprocess.run(cmd, check=True)
    print(f"[experts] harmonycell run {task.key} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return next(p.parent for p in root.glob("*/verdict.json"))


def run_expert(py: Path, expert: Expert, run_dir: Path, seed: int, epochs: int) -> dict:
    out = CACHE / "out" / run_dir.parent.name / expert.name
    cmd = [str(py), str(ADAPTERS / expert.adapter), "--data", str(run_dir / "data" / "sandbox"),
           "--out", str(out), "--seed", str(seed), "--epochs", str(epochs)]
    t0 = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.time() - t0
    if res.returncode != 0:
        return {"status": "failed", "reason": tail(res.stderr, 8), "wall_s": round(wall, 1)}
    info = json.loads((out / "adapter_result.json").read_text())
    return {"status": "ok", "pred": str(out / "pred_test.npy"), "wall_s": round(wall, 1),
            "peak_rss_mb": info.get("peak_rss_mb")}


def score_rows(adata, meta: dict, pred_path: Path) -> list[dict]:
    """The host's per-query scores of one prediction file (the same scorer as every node's)."""
    from harmonycell.tools.data.taskdata import queries_from_meta
    from harmonycell.tools.evaluation.scoring import score_prediction_file

    rep = score_prediction_file(adata, "test", pred_path, queries_from_meta(meta, "test"), genes=meta["genes"])
    return [r.model_dump(mode="json") for r in rep.per_perturbation]


def summarise(rows: list[dict]) -> dict[str, float | None]:
    out = {}
    for metric in METRICS:
        vals = [r["metrics"].get(metric) for r in rows if r["metrics"].get(metric) is not None]
        out[metric] = round(sum(vals) / len(vals), 4) if vals else None
    return out


def evaluate_task(task: Task, seed: int, experts: list[str], budget: int, epochs: int,
                  backend: str = "auto") -> dict:
    import anndata as ad
    import numpy as np

    from harmonycell.tools.data.taskdata import load_meta
    from harmonycell.tools.evaluation.baselines import baseline_predictions
    from harmonycell.tools.evaluation.compare import compare_all

    t0 = time.time()
    run_dir = harmonycell_run(task, seed, budget, epochs, backend)
    our_wall = time.time() - t0
    verdict = json.loads((run_dir / "verdict.json").read_text())
    tree = json.loads((run_dir / "tree.json").read_text())
    adata = ad.read_h5ad(run_dir / "unify" / "unified.h5ad")
    meta = load_meta(run_dir / "data" / "sandbox")
    best = next((r["content"]["node_id"] for r in map(json.loads, (run_dir / "transcript.jsonl").open())
                 if r.get("type") == "TestScored"), None)
    entries: dict[str, dict] = {}
    if best:
        rows = score_rows(adata, meta, run_dir / "nodes" / best / "pred_test.npy")
        entries["harmonycell"] = {"status": "ok", "rows": rows, "action": tree["nodes"][best]["action"],
                                  "wall_s": round(our_wall, 1)}
    tmp = CACHE / "out" / f"{task.key}-s{seed}" / "baselines"
    tmp.mkdir(parents=True, exist_ok=True)
    for name, pred in baseline_predictions(adata, "test").items():
        np.save(tmp / f"{name}.npy", pred.astype(np.float32))
        entries[name] = {"status": "ok", "rows": score_rows(adata, meta, tmp / f"{name}.npy")}
    for name in experts:
        expert = EXPERTS[name]
        py, why = ensure_venv(expert)
        if py is None:
            entries[name] = {"status": "cannot run here", "reason": why}
            continue
        res = run_expert(py, expert, run_dir, seed, epochs)
        if res["status"] == "ok":
            res["rows"] = score_rows(adata, meta, Path(res.pop("pred")))
        entries[name] = res
        print(f"[experts] {task.key} seed {seed} {name}: {res['status']} {res.get('wall_s')} s", flush=True)
    # every model against every other on the same queries, paired, with intervals
    scored = {k: v["rows"] for k, v in entries.items() if "rows" in v}
    for name, e in entries.items():
        if "rows" in e:
            others = {k: r for k, r in scored.items() if k != name}
            e["comparisons"] = [c.model_dump() for c in compare_all(e["rows"], others)]
            e["mean"] = summarise(e["rows"])
    return {"task": task.key, "title": task.title, "kind": task.kind, "seed": seed, "run": run_dir.name,
            "n_queries": len(meta["queries"]["test"]), "verdict": {k: verdict.get(k) for k in ("valid", "useful", "headline")},
            "entries": {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in entries.items()}}


def fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def versus(entry: dict, other: str, metric: str = METRICS[0]) -> str:
    c = next((c for c in entry.get("comparisons", []) if c["baseline"] == other and c["metric"] == metric), None)
    if c is None:
        return "n/a"
    ci = f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]" if c["ci_low"] is not None else "(too few queries)"
    return f"{c['conclusion']} ({c['mean_diff']:+.3f} {ci}, n={c['n']})"


def render(results: dict) -> str:
    lines = ["# Expert models beside HarmonyCell", "",
             "Generated by `python bench/experts.py` from `../shared/data/real/`; do not edit by hand. "
             "Every prediction (HarmonyCell's selected node, each expert, each baseline) is scored on the "
             "host by the same scorer on the same test queries of the same split; comparisons are paired "
             "per query with a seeded 95% bootstrap interval (`harmonycell.tools.evaluation.compare`). "
             "Experts train on the sandbox's training cells and control cells only, never a held-out target.",
             "", f"Machine: {results.get('machine')}. Finished {results.get('finished')}.", ""]
    lines += ["## Experts", "", "| expert | paper | status here |", "|---|---|---|"]
    for name, e in EXPERTS.items():
        status = results.get("install", {}).get(name, "not attempted")
        lines.append(f"| {name} | {e.paper} | {status} |")
    for res in results.get("tasks", []):
        lines += ["", f"## {res['title']} (split seed {res['seed']}, {res['n_queries']} test queries)", "",
                  "| model | shift-corrected PearsonΔ | DeltaPCC | RMSE | wall s | peak MB | "
                  "vs HarmonyCell (shift-corrected, paired) |", "|---|---|---|---|---|---|---|"]
        for name, e in res["entries"].items():
            label = f"HarmonyCell ({e['action']})" if name == "harmonycell" else name
            if "mean" not in e:
                lines.append(f"| {label} | {e['status']}: {e.get('reason', '')[:160]} | | | | | |")
                continue
            m = e["mean"]
            vs = "" if name == "harmonycell" else versus(e, "harmonycell")
            lines.append(f"| {label} | {fmt(m[METRICS[0]])} | {fmt(m['DeltaPCC'])} | {fmt(m['RMSE'])} | "
                         f"{fmt(e.get('wall_s'), 0)} | {fmt(e.get('peak_rss_mb'), 0)} | {vs} |")
        wins = [n for n, e in res["entries"].items() if n in EXPERTS and "better" in versus(e, "harmonycell")[:6]]
        lines += ["", f"Where an expert beats HarmonyCell's pick here: {', '.join(wins)}." if wins else
                  "No expert is better than HarmonyCell's pick here with the interval excluding 0 "
                  "(see each row: indistinguishable is not a loss either way)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--experts", default=",".join(EXPERTS))
    ap.add_argument("--budget", type=int, default=3, help="HarmonyCell search budget (nodes)")
    ap.add_argument("--epochs", type=int, default=60, help="epoch cap for our nodes and the experts")
    ap.add_argument("--backend", default="auto", help="sandbox of HarmonyCell's own nodes")
    ap.add_argument("--render", action="store_true", help="only re-render docs/experts.md")
    args = ap.parse_args()
    if not args.render:
        experts = [e for e in args.experts.split(",") if e]
        results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
                   "install": {}, "tasks": []}
        for name in experts:
            py, why = ensure_venv(EXPERTS[name])
            results["install"][name] = "installed in its own venv" if py else f"cannot run here: {why}"
        for key in args.tasks.split(","):
            for seed in map(int, args.seeds.split(",")):
                results["tasks"].append(evaluate_task(TASKS[key], seed, experts, args.budget, args.epochs,
                                                      args.backend))
        results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        from harmonycell.tools.record import atomic

        atomic.write_json(RESULTS, results)
    from harmonycell.tools.record import atomic

    atomic.write_text(DOC, render(json.loads(RESULTS.read_text())))
    print(f"[experts] wrote {RESULTS} and {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
