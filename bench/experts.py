"""Expert models beside HarmonyCell's pick, on the same cells, splits, queries and metrics.

    python bench/experts.py                       # every task x seed x expert, then docs/experts.md
    python bench/experts.py --tasks norman --seeds 0 --experts biolord
    python bench/experts.py --tasks papalexi --folds 3   # nested CV: every fold its own run
    python bench/experts.py --render              # only re-render docs/experts.md from results
    python bench/experts.py --kb KB --record-wins --tasks papalexi --folds 3   # store measured wins
    python bench/experts.py --tasks papalexi --folds 3 --kb KB   # HarmonyCell reading those wins

For each task and split seed, a HarmonyCell run (builtin policies) makes the task: its run folder
holds the unified data (host only), the sandbox folder (training cells, controls, queries,
features) and the selected node. Each expert gets a virtual environment of its own
(``.cache/experts/<name>/venv``, made here, so the product's pins never bend to an expert's),
reads the same sandbox folder through a small adapter (``bench/expert_adapters/``) and writes
``pred_test.npy`` in the sandbox's format. The host then scores every prediction (ours, each
expert's, each baseline's) with the same scorer and compares them per query, paired, with a
seeded bootstrap interval. An expert that cannot be installed or run here is listed with the
exact reason. Results: ``bench/results/experts.json``; table: ``docs/experts.md``.

With ``--folds K`` a task is run as ``harmonycell run --folds K`` (the project's nested
cross-validation: fold k of a seeded K-fold partition of the held-out units, the whole search
inside each fold): each fold's run folder gets its own experts and baselines, and the folds'
per-query scores are pooled (``tools.evaluation.crossval``): every held-out query is tested once,
so a metric's mean and the paired differences with HarmonyCell carry a bootstrap interval over
all pooled queries. Per-fold rows: ``bench/results/experts_folds.csv``. A new result replaces
only the result of the same task, seed, fold count and knowledge-base use; the others are kept.

Where an expert beats HarmonyCell's pick (paired interval above 0) and a backbone of ours carries
its idea (``knowledge.EXPERT_IDEAS``), ``--kb`` stores the win with the task's profile; a later run
on a similar task (above the warm-start threshold) tries that backbone first.
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
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling modules
import gears_go  # noqa: E402
from harmonycell.tools.errors import HarmonyCellError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / ".." / "shared" / "data" / "real"
CACHE = REPO / ".cache" / "experts"
RESULTS = REPO / "bench" / "results" / "experts.json"
FOLD_CSV = REPO / "bench" / "results" / "experts_folds.csv"
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
    idea: str = ""        # the architectural idea our backbones lack (docs/experts.md)
    # host-side files the adapter needs in its output folder, written before it runs:
    # (sandbox folder, output folder) -> what was written
    prepare: Callable[[Path, Path], dict] | None = None


EXPERTS = {e.name: e for e in (
    Expert("biolord", "Piran et al., Nature Biotechnology 2024", ("biolord==0.0.3",), "biolord_adapter.py",
           idea="disentanglement: every known attribute (here the cell context and the perturbation's "
                "features) gets its own embedding network, every cell a free latent learnt without an encoder "
                "(auto-decoder, noise-regularised so it carries only what the attributes do not), and one decoder "
                "reads their concatenation; a prediction swaps the perturbation attribute of a control cell's "
                "latent. Ours condition one network on [control cell, perturbation embedding] and have no "
                "separate per-attribute embedding of the cell context."),
    # STATE trains by optimiser steps: its adapter turns --epochs into passes over the cells
    # (sets of 16 cells, 8 sets a step), capped at 1500 steps on CPU
    Expert("state", "Adduri et al. (Arc Institute), bioRxiv 2025", ("arc-state==0.11.1",), "state_adapter.py",
           idea="populations, not cells: a transformer (Llama blocks) attends across a set of cells (16 here) "
                "and maps a set of control cells to a set of perturbed cells, trained with a distributional loss "
                "(energy distance between predicted and observed sets). Ours map one randomly paired control "
                "cell at a time (per-cell MSE/Huber, an ELBO or flow matching); no cell sees another."),
    Expert("cpa", "Lotfollahi et al., Molecular Systems Biology 2023", ("cpa-tools==0.8.1",), None,
           why_not="cpa-tools 0.8.1 requires torch>1.8,<2.0; the only torch here is 2.13.0 (CPU), "
                   "and torch 1.x from the registry is the CUDA build (several GB of nvidia packages)"),
    # cell-gears imports torch_geometric without declaring it, and indexes a sparse matrix with a
    # pandas Series, which scipy >= 1.15 rejects; its GO graph and gene list are written by the
    # host from the local gene database (bench/gears_go.py), never downloaded
    Expert("gears", "Roohani et al., Nature Biotechnology 2023",
           ("cell-gears==0.1.2", "torch_geometric==2.8.1", "scipy==1.14.1"),
           "gears_adapter.py", prepare=gears_go.write_for_sandbox),
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


def ensure_venv(expert: Expert, cache: Path = CACHE) -> tuple[Path | None, str]:
    """The expert's own interpreter, or None and the exact install error."""
    home = cache / expert.name
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


def run_wall(run_dir: Path) -> float:
    """Seconds from a run's first to its last transcript record (so a reused run keeps its time)."""
    from datetime import datetime

    stamps = [json.loads(line)["ts"] for line in (run_dir / "transcript.jsonl").open() if line.strip()]
    return round((datetime.fromisoformat(stamps[-1]) - datetime.fromisoformat(stamps[0])).total_seconds(), 1)


def run_command(task: Task, seed: int, budget: int, epochs: int, backend: str, out: Path,
                folds: int = 1, kb: Path | None = None) -> list[str]:
    # without --kb a benchmark neither reads nor writes the user's knowledge base
    return [sys.executable, "-m", "harmonycell.agents.cli", "run", *map(str, task_inputs(task)), "--task", task.kind,
            "--seed", str(seed), "--budget", str(budget), "--epochs", str(epochs), "--out", str(out),
            "--backend", backend, *(["--kb", str(kb)] if kb else ["--no-kb"]),
            *(["--folds", str(folds)] if folds > 1 else [])]


def runs_root(task: Task, seed: int, folds: int = 1, kb: Path | None = None) -> Path:
    # a run that read a knowledge base is never reused for one that did not, nor for another one
    return CACHE / "runs" / (f"{task.key}-s{seed}" + (f"-k{folds}" if folds > 1 else "") + kb_suffix(kb))


def kb_suffix(kb: Path | None) -> str:
    return f"-kb-{kb.stem}" if kb else ""


def harmonycell_run(task: Task, seed: int, budget: int, epochs: int, backend: str = "auto",
                    kb: Path | None = None) -> Path:
    """A finished HarmonyCell run of the task (reused when one already finished)."""
    root = runs_root(task, seed, 1, kb)
    done = [p.parent for p in root.glob("*/verdict.json")]
    if done:
        return done[0]
    t0 = time.time()
    subprocess.run(run_command(task, seed, budget, epochs, backend, root, kb=kb), check=True)
    print(f"[experts] harmonycell run {task.key} seed {seed}: {time.time() - t0:.0f} s", flush=True)
    return next(p.parent for p in root.glob("*/verdict.json"))


def harmonycell_cv(task: Task, seed: int, folds: int, budget: int, epochs: int, backend: str = "auto",
                   kb: Path | None = None) -> list[Path]:
    """The fold run folders of a finished ``harmonycell run --folds K`` (reused when one finished)."""
    root = runs_root(task, seed, folds, kb)
    done = [p.parent for p in root.glob("cv-*/cv.json")]
    if not done:
        t0 = time.time()
        subprocess.run(run_command(task, seed, budget, epochs, backend, root, folds, kb), check=True)
        print(f"[experts] harmonycell run --folds {folds} {task.key} seed {seed}: {time.time() - t0:.0f} s", flush=True)
        done = [p.parent for p in root.glob("cv-*/cv.json")]
    return [done[0] / f"repeat0-fold{k}" for k in range(folds)]


def task_profile(run_dir: Path, kind: str) -> str:
    """The knowledge base's profile of a run's task (training cells only), as a run computes it."""
    import anndata as ad

    from harmonycell.tools.search.knowledge import task_profile_text

    return task_profile_text(ad.read_h5ad(run_dir / "unify" / "unified.h5ad"), kind)


def expert_wins(res: dict) -> list[dict]:
    """The experts that beat HarmonyCell's pick on this result (paired interval on the first
    metric entirely above 0) and have a backbone of ours carrying their idea."""
    from harmonycell.tools.search.knowledge import EXPERT_IDEAS

    out = []
    for name, e in res["entries"].items():
        c = next((c for c in e.get("comparisons", []) if c["baseline"] == "harmonycell" and c["metric"] == METRICS[0]), None)
        if name in EXPERT_IDEAS and c is not None and c["conclusion"] == "better":
            out.append({"expert": name, "backbone": EXPERT_IDEAS[name], "metric": c["metric"],
                        "delta": c["mean_diff"], "lo": c["ci_low"], "hi": c["ci_high"], "n": c["n"]})
    return out


def data_scope(run_dirs: list[Path]) -> dict:
    """The input files' fingerprint and the test units of these run folders (a task's folds)."""
    from harmonycell.tools.search.knowledge import DataScope, scope_of_run

    scopes = [scope_of_run(d) for d in run_dirs]
    merged = DataScope(scopes[0].dataset, tuple(sorted({u for sc in scopes for u in sc.test_units})))
    return {"dataset": merged.dataset, "test_units": list(merged.test_units)}


def record_wins(res: dict, kb: Path, experts: list[str] | None = None) -> list[int]:
    """Store each expert win of ``res`` (of ``experts`` only, when given) in the knowledge base,
    with the task's profile."""
    from harmonycell.tools.search.knowledge import DataScope, ExpertWin, KnowledgeBase, embed

    store, ids = KnowledgeBase(kb), []
    wins = [w for w in expert_wins(res) if experts is None or w["expert"] in experts]
    if not wins:
        return ids
    if "profile" not in res:
        raise SystemExit(f"the {res['task']} result predates recorded task profiles: re-run it to store its wins")
    if "scope" not in res:  # without it, no run could tell whether the win was measured on its test units
        raise SystemExit(f"the {res['task']} result predates recorded data scopes: re-run it to store its wins")
    profile = res["profile"]
    scope = DataScope(res["scope"]["dataset"], tuple(res["scope"]["test_units"]))
    vec = embed([profile])[0]
    label = f"{res['task']} seed {res['seed']}" + (f", {res['folds']}-fold" if int(res.get("folds", 1)) > 1 else "")
    for w in wins:
        ids.append(store.add_expert_win(ExpertWin(task=label, profile=profile, embedding=vec, scope=scope,
                                                  source="bench/experts.py (bench/results/experts.json)", **w)))
        print(f"[experts] {label}: {w['expert']} beat HarmonyCell's pick ({w['delta']:+.3f} [{w['lo']:.3f}, "
              f"{w['hi']:.3f}], n={w['n']}); stored in {store.path}: a similar task tries {w['backbone']} first", flush=True)
    return ids


def run_expert(py: Path, expert: Expert, run_dir: Path, out: Path, seed: int, epochs: int) -> dict:
    """The expert's adapter on the run's sandbox folder; a finished output for the same sandbox
    folder is reused (a bench killed half-way resumes where it stopped)."""
    data = run_dir / "data" / "sandbox"
    source = {"data": str(data), "seed": seed, "epochs": epochs}
    done = out / "source.json"
    if not (done.exists() and json.loads(done.read_text()) == source):
        done.unlink(missing_ok=True)
        if expert.prepare is not None:
            out.mkdir(parents=True, exist_ok=True)
            try:
                expert.prepare(data, out)
            except HarmonyCellError as e:  # e.g. the gene database is not installed
                return {"status": "cannot run here", "reason": e.one_line()}
        cmd = [str(py), str(ADAPTERS / expert.adapter), "--data", str(data),
               "--out", str(out), "--seed", str(seed), "--epochs", str(epochs)]
        t0 = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.time() - t0
        if res.returncode != 0:
            return {"status": "failed", "reason": tail(res.stderr, 8), "wall_s": round(wall, 1)}
        from harmonycell.tools.record import atomic

        atomic.write_json(out / "wall.json", {"wall_s": round(wall, 1)})
        atomic.write_json(done, source)
    info = json.loads((out / "adapter_result.json").read_text())
    return {"status": "ok", "pred": str(out / "pred_test.npy"), "wall_s": json.loads((out / "wall.json").read_text())["wall_s"],
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


def harmonycell_entry(run_dir: Path, adata, meta: dict) -> dict:
    """HarmonyCell's selected node of a finished run, scored per query on the run's test queries."""
    best = next((r["content"]["node_id"] for r in map(json.loads, (run_dir / "transcript.jsonl").open())
                 if r.get("type") == "TestScored"), None)
    if not best:
        verdict = json.loads((run_dir / "verdict.json").read_text())
        return {"status": "failed", "reason": "no node was selected and tested: " + verdict.get("headline", "")}
    tree = json.loads((run_dir / "tree.json").read_text())
    # the largest node's training process (runs before the harness reported it: none); the host
    # process (unification, scoring) is not counted
    peaks = [json.loads(p.read_text()).get("peak_rss_mb") for p in (run_dir / "nodes").glob("*/harness_result.json")]
    peaks = [p for p in peaks if p is not None]
    return {"status": "ok", "rows": score_rows(adata, meta, run_dir / "nodes" / best / "pred_test.npy"),
            "action": tree["nodes"][best]["action"], "wall_s": run_wall(run_dir),
            "peak_rss_mb": max(peaks) if peaks else None}


WITHOUT_KB = "harmonycell_without_kb"


def without_kb_entry(twin: Path, run_dir: Path) -> dict | None:
    """The pick of the same task, seed and fold run without the knowledge base, scored on this run's
    queries (the same split: a run's split depends only on its seed and fold), when it was run."""
    import anndata as ad

    from harmonycell.tools.data.taskdata import load_meta

    if not (twin / "verdict.json").exists():
        return None
    meta, twin_meta = load_meta(run_dir / "data" / "sandbox"), load_meta(twin / "data" / "sandbox")
    if meta["queries"]["test"] != twin_meta["queries"]["test"]:
        raise SystemExit(f"{twin} and {run_dir} do not share their test queries: not a paired comparison")
    return harmonycell_entry(twin, ad.read_h5ad(run_dir / "unify" / "unified.h5ad"), meta)


def score_run(run_dir: Path, experts: list[str], seed: int, epochs: int, out_root: Path) -> dict:
    """Every predictor's per-query rows on one finished run's test queries: HarmonyCell's selected
    node, each baseline, each expert (trained on this run's sandbox folder)."""
    import anndata as ad
    import numpy as np

    from harmonycell.tools.data.taskdata import load_meta
    from harmonycell.tools.evaluation.baselines import baseline_predictions

    verdict = json.loads((run_dir / "verdict.json").read_text())
    adata = ad.read_h5ad(run_dir / "unify" / "unified.h5ad")
    meta = load_meta(run_dir / "data" / "sandbox")
    entries: dict[str, dict] = {"harmonycell": harmonycell_entry(run_dir, adata, meta)}
    tmp = out_root / "baselines"
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
        res = run_expert(py, expert, run_dir, out_root / name, seed, epochs)
        if res["status"] == "ok":
            res["rows"] = score_rows(adata, meta, Path(res.pop("pred")))
        entries[name] = res
        print(f"[experts] {out_root.relative_to(CACHE / 'out')} {name}: {res['status']} {res.get('wall_s')} s", flush=True)
    return {"run": run_dir.name, "n_queries": len(meta["queries"]["test"]),
            "verdict": {k: verdict.get(k) for k in ("valid", "useful", "headline")}, "entries": entries}


def without_rows(entries: dict[str, dict]) -> dict[str, dict]:
    return {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in entries.items()}


def evaluate_task(task: Task, seed: int, experts: list[str], budget: int, epochs: int,
                  backend: str = "auto", kb: Path | None = None) -> dict:
    from harmonycell.tools.evaluation.compare import compare_all

    run_dir = harmonycell_run(task, seed, budget, epochs, backend, kb)
    scored_run = score_run(run_dir, experts, seed, epochs, CACHE / "out" / runs_root(task, seed, 1, kb).name)
    entries = scored_run["entries"]
    if kb:
        done = [p.parent for p in runs_root(task, seed).glob("*/verdict.json")]
        twin_entry = without_kb_entry(done[0], run_dir) if done else None
        if twin_entry:
            entries[WITHOUT_KB] = twin_entry
    # every model against every other on the same queries, paired, with intervals
    scored = {k: v["rows"] for k, v in entries.items() if "rows" in v}
    for name, e in entries.items():
        if "rows" in e:
            others = {k: r for k, r in scored.items() if k != name}
            e["comparisons"] = [c.model_dump() for c in compare_all(e["rows"], others)]
            e["mean"] = summarise(e["rows"])
    return {"task": task.key, "title": task.title, "kind": task.kind, "seed": seed, "folds": 1,
            "budget": budget, "epochs": epochs, "backend": backend, "kb": kb.stem if kb else "",
            "profile": task_profile(run_dir, task.kind), "scope": data_scope([run_dir]),
            **{k: v for k, v in scored_run.items() if k != "entries"}, "entries": without_rows(entries)}


def pooled_metric(values: list[float | None], metric: str) -> dict:
    """Mean over pooled queries with a seeded bootstrap interval, descriptive only (an undefined
    value is left out, never 0); None throughout when the metric is undefined on every query."""
    import numpy as np

    from harmonycell.tools.evaluation.compare import MIN_N, as_values, bootstrap_mean_ci

    if all(v is None for v in values):
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0}
    v = as_values(metric, values)
    v = v[~np.isnan(v)]
    lo, hi = bootstrap_mean_ci(v) if len(v) >= MIN_N else (None, None)
    return {"mean": float(v.mean()), "ci_low": lo, "ci_high": hi, "n": int(len(v))}


def aggregate_folds(fold_entries: list[dict[str, dict]], reference: str = "harmonycell") -> dict[str, dict]:
    """One entry per predictor from the folds' entries (each ``{name: {"status", "rows", ...}}``):
    the metric means pooled over every fold's queries with a bootstrap interval, the across-fold
    spread of the fold means, and each predictor minus ``reference``, paired per query and pooled
    over folds (``crossval.pooled_comparisons``). A predictor that ran in no fold keeps the first
    fold's status and reason."""
    from harmonycell.tools.evaluation.crossval import FoldResult, fold_mean, pooled_comparisons, spread

    names = list(dict.fromkeys(n for f in fold_entries for n in f))
    out: dict[str, dict] = {}
    for name in names:
        runs = [f.get(name, {"status": "missing", "reason": "not run in this fold"}) for f in fold_entries]
        ok = [e for e in runs if "rows" in e]
        if not ok:
            out[name] = {"status": runs[0]["status"], "reason": runs[0].get("reason", "")}
            continue
        rows = [r for e in ok for r in e["rows"]]
        entry = {"status": "ok" if len(ok) == len(runs) else f"ok in {len(ok)} of {len(runs)} folds",
                 "folds_ok": len(ok),
                 "pooled": {m: pooled_metric([r["metrics"].get(m) for r in rows], m) for m in METRICS},
                 "spread": {m: spread([fold_mean(e["rows"], m) for e in ok]).model_dump() for m in METRICS},
                 "fold_means": [{m: fold_mean(e["rows"], m) for m in METRICS} if "rows" in e else None
                                for e in runs]}
        walls = [e["wall_s"] for e in ok if e.get("wall_s") is not None]
        peaks = [e["peak_rss_mb"] for e in ok if e.get("peak_rss_mb") is not None]
        entry["wall_s"] = round(sum(walls) / len(walls), 1) if walls else None  # mean per fold
        entry["peak_rss_mb"] = max(peaks) if peaks else None
        actions = [e["action"] for e in ok if "action" in e]
        if actions:
            entry["action"] = ", ".join(dict.fromkeys(actions))
        if name != reference:
            folds = [FoldResult(repeat=0, fold=k, model_rows=f[name]["rows"],
                                baseline_rows={reference: f[reference]["rows"]})
                     for k, f in enumerate(fold_entries)
                     if "rows" in f.get(name, {}) and "rows" in f.get(reference, {})]
            entry["comparisons"] = [c.model_dump() for c in pooled_comparisons(folds, METRICS)]
        out[name] = entry
    return out


def evaluate_task_folds(task: Task, seed: int, folds: int, experts: list[str], budget: int, epochs: int,
                        backend: str = "auto", kb: Path | None = None) -> dict:
    from harmonycell.tools.evaluation.compare import compare_all

    runs = harmonycell_cv(task, seed, folds, budget, epochs, backend, kb)
    per_fold = [score_run(run_dir, experts, seed, epochs, CACHE / "out" / runs_root(task, seed, folds, kb).name / f"fold{k}")
                for k, run_dir in enumerate(runs)]
    fold_entries = [f["entries"] for f in per_fold]
    twins = sorted(runs_root(task, seed, folds).glob("cv-*/cv.json")) if kb else []
    for k, f in enumerate(fold_entries):
        twin_entry = without_kb_entry(twins[0].parent / f"repeat0-fold{k}", runs[k]) if twins else None
        if twin_entry:
            f[WITHOUT_KB] = twin_entry
    for f in fold_entries:  # within a fold, each predictor against HarmonyCell (for the per-fold rows)
        if "rows" in f.get("harmonycell", {}):
            for name, e in f.items():
                if name != "harmonycell" and "rows" in e:
                    e["comparisons"] = [c.model_dump() for c in compare_all(e["rows"], {"harmonycell": f["harmonycell"]["rows"]})]
        for e in f.values():
            if "rows" in e:
                e["mean"] = summarise(e["rows"])
    return {"task": task.key, "title": task.title, "kind": task.kind, "seed": seed, "folds": folds,
            "budget": budget, "epochs": epochs, "backend": backend, "kb": kb.stem if kb else "", "cv": runs[0].parent.name,
            "n_queries": sum(f["n_queries"] for f in per_fold),
            # one profile for the task: fold 0's training cells (folds differ only in held-out units)
            "profile": task_profile(runs[0], task.kind),
            # every fold's test units: a win measured here was measured on each of them
            "scope": data_scope(runs),
            "entries": aggregate_folds(fold_entries),
            "per_fold": [{"fold": k, **{kk: vv for kk, vv in f.items() if kk != "entries"},
                          "entries": without_rows(f["entries"])} for k, f in enumerate(per_fold)]}


def result_key(res: dict) -> tuple[str, int, int, str]:
    # "kb": the knowledge base's file stem a run read ("" for none; True in results before stems)
    return res["task"], int(res["seed"]), int(res.get("folds", 1)), str(res.get("kb") or "")


def merge_results(old: dict | None, new: dict) -> dict:
    """``new`` over ``old``: a task result replaces only the one with the same task, seed and fold
    count; install statuses are updated per expert; everything else in ``old`` is kept."""
    if not old:
        return new
    fresh = {result_key(r) for r in new["tasks"]}
    order = {k: i for i, k in enumerate(TASKS)}
    tasks = [r for r in old.get("tasks", []) if result_key(r) not in fresh] + new["tasks"]
    tasks.sort(key=lambda r: (int(r.get("folds", 1)) > 1, order.get(r["task"], len(order)), r["seed"],
                              r.get("folds", 1), str(r.get("kb") or "")))
    return {**old, **{k: v for k, v in new.items() if k not in ("install", "tasks")},
            "install": {**old.get("install", {}), **new.get("install", {})}, "tasks": tasks}


FOLD_COLUMNS = ("task", "seed", "folds", "fold", "run", "model", "status", "n_queries", *METRICS,
                "wall_s", "peak_rss_mb", "vs_harmonycell_shift_corrected")


def fold_rows(res: dict) -> list[dict]:
    """Per-fold, per-predictor rows of a cross-validated task result (for the CSV)."""
    rows = []
    for f in res.get("per_fold", []):
        for name, e in f["entries"].items():
            m = e.get("mean", {})
            rows.append({"task": res["task"], "seed": res["seed"], "folds": res["folds"], "fold": f["fold"],
                         "run": f["run"], "model": name, "status": e["status"], "n_queries": f["n_queries"],
                         **{k: m.get(k) for k in METRICS}, "wall_s": e.get("wall_s"),
                         "peak_rss_mb": e.get("peak_rss_mb"),
                         "vs_harmonycell_shift_corrected": "" if name == "harmonycell" else versus(e, "harmonycell")})
    return rows


def fold_csv(results: dict) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FOLD_COLUMNS, lineterminator="\n")
    w.writeheader()
    for res in results.get("tasks", []):
        w.writerows(fold_rows(res))
    return buf.getvalue()


def fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def interval(c: dict) -> str:
    return f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]" if c["ci_low"] is not None else "(too few queries)"


def versus(entry: dict, other: str, metric: str = METRICS[0]) -> str:
    c = next((c for c in entry.get("comparisons", []) if c["baseline"] == other and c["metric"] == metric), None)
    if c is None:
        return "n/a"
    return f"{c['conclusion']} ({c['mean_diff']:+.3f} {interval(c)}, n={c['n']})"


def pooled_cell(p: dict) -> str:
    if p["mean"] is None:
        return "n/a"
    return f"{p['mean']:.3f} {interval(p)}" if p["ci_low"] is not None else f"{p['mean']:.3f}"


def verdict_line(res: dict) -> str:
    entries = res["entries"]
    better = [n for n, e in entries.items() if n != "harmonycell" and versus(e, "harmonycell").startswith("better")]
    worse = [n for n, e in entries.items() if n != "harmonycell" and versus(e, "harmonycell").startswith("worse")]
    kind = {n: "expert" if n in EXPERTS else "the same search without the knowledge base" if n == WITHOUT_KB
            else "baseline" for n in entries}
    return (("Better than HarmonyCell's pick here (interval excluding 0): "
             + ", ".join(f"{n} ({kind[n]})" for n in better) + "." if better else
             "Nothing here is better than HarmonyCell's pick with the interval excluding 0.")
            + (" Worse than it: " + ", ".join(f"{n} ({kind[n]})" for n in worse) + "." if worse else "")
            + (" With a single test query no interval exists: this task decides nothing."
               if res["n_queries"] < 3 else ""))


def entry_label(name: str, e: dict) -> str:
    if name in ("harmonycell", WITHOUT_KB) and "action" in e:
        return ("HarmonyCell" if name == "harmonycell" else "HarmonyCell without the knowledge base") + f" ({e['action']})"
    return name


def reading_kb(res: dict) -> str:
    kb = res.get("kb")
    return (", HarmonyCell reading a knowledge base with the expert wins"
            + (f" (`{kb}`)" if isinstance(kb, str) else "")) if kb else ""


def settings(res: dict) -> list[str]:
    """The run's settings, when the result recorded them (results before they were recorded: none)."""
    if "epochs" not in res:
        return []
    kb = (" HarmonyCell's runs read a knowledge base holding the expert wins recorded before them "
          "(`--kb`), so the search tried the backbone carrying the winning expert's idea first."
          if res.get("kb") else "")
    return ["", f"Settings: HarmonyCell budget {res['budget']} nodes, epoch cap {res['epochs']} for our nodes and "
                f"the experts (STATE: {res['epochs']} passes over the training cells, at most 1500 steps), "
                f"HarmonyCell sandbox `{res['backend']}`.{kb}{res.get('note', '')}"]


def render_split(res: dict) -> list[str]:
    lines = ["", f"## {res['title']} (split seed {res['seed']}, {res['n_queries']} test queries){reading_kb(res)}",
             *settings(res), "",
             "| model | shift-corrected PearsonΔ | DeltaPCC | RMSE | wall s | peak MB | "
             "vs HarmonyCell (shift-corrected, paired) |", "|---|---|---|---|---|---|---|"]
    for name, e in res["entries"].items():
        label = entry_label(name, e)
        if "mean" not in e:
            lines.append(f"| {label} | {e['status']}: {e.get('reason', '')[:160]} | | | | | |")
            continue
        m = e["mean"]
        vs = "" if name == "harmonycell" else versus(e, "harmonycell")
        lines.append(f"| {label} | {fmt(m[METRICS[0]])} | {fmt(m['DeltaPCC'])} | {fmt(m['RMSE'])} | "
                     f"{fmt(e.get('wall_s'), 0)} | {fmt(e.get('peak_rss_mb'), 0)} | {vs} |")
    return lines + ["", verdict_line(res)]


def render_folds(res: dict) -> list[str]:
    k = res["folds"]
    lines = ["", f"## {res['title']}: {k}-fold cross-validation (split seed {res['seed']}, "
                 f"{res['n_queries']} test queries pooled over {k} folds){reading_kb(res)}", *settings(res), "",
             f"Each fold is its own `harmonycell run --folds {k}` run folder (`{res['cv']}`): its own search, "
             "its own experts and baselines trained on that fold's training cells. Metric cells: mean over the "
             "pooled test queries [95% bootstrap interval over queries]; wall s: mean per fold; peak MB: "
             "the largest fold's.", "",
             "| model | shift-corrected PearsonΔ | DeltaPCC | RMSE | wall s | peak MB | "
             "vs HarmonyCell (shift-corrected, paired, pooled over folds) |", "|---|---|---|---|---|---|---|"]
    for name, e in res["entries"].items():
        label = entry_label(name, e)
        if "pooled" not in e:
            lines.append(f"| {label} | {e['status']}: {e.get('reason', '')[:160]} | | | | | |")
            continue
        p = e["pooled"]
        vs = "" if name == "harmonycell" else versus(e, "harmonycell")
        note = "" if e["status"] == "ok" else f" ({e['status']})"
        lines.append(f"| {label}{note} | {pooled_cell(p[METRICS[0]])} | {pooled_cell(p['DeltaPCC'])} | "
                     f"{pooled_cell(p['RMSE'])} | {fmt(e.get('wall_s'), 0)} | {fmt(e.get('peak_rss_mb'), 0)} | {vs} |")
    lines += ["", f"Per fold (shift-corrected PearsonΔ, mean over the fold's queries; rows in "
                  f"`bench/results/{FOLD_CSV.name}`):", "",
              "| model | " + " | ".join(f"fold {f['fold']} ({f['n_queries']} q)" for f in res["per_fold"]) + " | mean ± sd |",
              "|---" * (len(res["per_fold"]) + 2) + "|"]
    for name, e in res["entries"].items():
        if "pooled" not in e:
            continue
        cells = [fmt(m[METRICS[0]]) if m else "failed" for m in e["fold_means"]]
        s = e["spread"][METRICS[0]]
        sd = f"{fmt(s['mean'])} ± {fmt(s['sd'])}" if s["sd"] is not None else fmt(s["mean"])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sd} |")
    return lines + ["", verdict_line(res)]


def render(results: dict) -> str:
    lines = ["# Expert models beside HarmonyCell", "",
             "**Measured under the previous headline** (shift-corrected PearsonΔ, seeded bootstrap intervals), "
             f"finished {results.get('finished')}; not yet re-measured under the discrimination score with the "
             "sign-flip test (`docs/models.md`): the stored per-query rows hold the old metrics only, and the "
             "experts' venvs must be rebuilt to train them again. Read the conclusions below in that light.", "",
             "Generated by `python bench/experts.py` from `../shared/data/real/`; do not edit by hand. "
             "Every prediction (HarmonyCell's selected node, each expert, each baseline) is scored on the "
             "host by the same scorer on the same test queries of the same split; comparisons are paired "
             "per query with a seeded 95% bootstrap interval (`harmonycell.tools.evaluation.compare`). "
             "Experts train on the sandbox's training cells and control cells only, never a held-out target. "
             "Cross-validated tasks (`--folds K`) pool every fold's per-query scores: each held-out query is "
             "tested once, by a model (ours, an expert's, a baseline's) that never saw it, and the interval is "
             "the bootstrap over all pooled queries (`harmonycell.tools.evaluation.crossval`). Peak MB: an "
             "expert's training process; for HarmonyCell, its largest node's training process (the host "
             "process that unifies and scores is not counted; runs before nodes reported it show n/a).",
             "", f"Machine: {results.get('machine')}. Finished {results.get('finished')}.", ""]
    lines += ["## Experts", "", "| expert | paper | status here |", "|---|---|---|"]
    for name, e in EXPERTS.items():
        status = results.get("install", {}).get(name, "not attempted")
        lines.append(f"| {name} | {e.paper} | {status} |")
    from harmonycell.tools.search.actions import all_backbone_paths, closed_form
    from harmonycell.tools.search.knowledge import EXPERT_IDEAS

    # the networks the experts' ideas were compared with (the closed-form models came later)
    ours = ", ".join(p.split("/")[1] for p in all_backbone_paths()
                     if p not in EXPERT_IDEAS.values() and not closed_form(p))
    lines += ["", f"What each expert has that HarmonyCell's original backbones (`tools/search/actions.py`: {ours}) "
              "lack, and the backbone that now carries it:", "",
              *[f"- {name}: {e.idea}" + (f" Now carried by `{EXPERT_IDEAS[name]}` (next section)."
                                         if name in EXPERT_IDEAS else " No backbone of ours carries it yet.")
                for name, e in EXPERTS.items() if e.idea]]
    lines += render_learnt(results)
    for res in results.get("tasks", []):
        lines += render_folds(res) if int(res.get("folds", 1)) > 1 else render_split(res)
    return "\n".join(lines) + "\n"


def render_learnt(results: dict) -> list[str]:
    """How an expert's win changed the search, and what that measured where it was run."""
    from harmonycell.tools.search.knowledge import EXPERT_IDEAS

    lines = ["", "## What the search learnt from the experts", "",
             "An expert that beats HarmonyCell's pick (paired interval above 0) and has a backbone of ours "
             "carrying its idea (`tools/search/knowledge.py` `EXPERT_IDEAS`: "
             + ", ".join(f"{e} -> `{b}`" for e, b in EXPERT_IDEAS.items())
             + ") is stored in the knowledge base by `python bench/experts.py --kb KB` (or `--kb KB --record-wins` "
             "for results already measured), with the task's profile. A run whose task profile is similar "
             "enough to warm-start retrieves the win and expands that backbone first, at the paradigm and the "
             "backbone level, until a retrieved run has trained that backbone: from then on its measured reward "
             "ranks it like any other (`harmonycell kb list` shows stored wins; `harmonycell kb forget-expert ID` "
             "drops one).",
             "", "`discriminative/attribute-decoder` (`tools/search/model_templates/attribute_decoder.py`) takes from "
             "biolord the separate embedding per attribute (the cell's basal state through a narrow, unit-scaled, "
             "noise-regularised bottleneck; the perturbation through the shared perturbation encoder), one decoder "
             "reading their concatenation, and prediction by swapping the perturbation attribute: the decoder's "
             "contrast between the queried perturbation and none on a control cell's basal state, added to that "
             "cell. It leaves out biolord's auto-decoder (every cell reconstructed from its own free latent): added "
             "to the swap loss, that reconstruction term made the decoder ignore the perturbation on the synthetic "
             "task of `tests/test_models_train.py`. Its early stopping scores per-perturbation means, as queries "
             "are answered.",
             "", "`discriminative/set-transformer` (`tools/search/model_templates/set_transformer.py`) takes from "
             "STATE the set: the cells of a batch that share a perturbation attend to each other (self-attention "
             "masked to the set), so a set of control cells maps to a set of perturbed cells; a query's control "
             "cells are one set. STATE's distributional loss (energy distance between the predicted and observed "
             "sets) is a refinement, `hparams:energy_weight=...`, off by default: added to the paired loss at "
             "weight 0.01 and 0.1 it lowered the held-out DeltaPCC on the synthetic task of "
             "`bench/backbone_synthetic.py` (one seed each, no interval: `bench/results/backbone_synthetic.json`), "
             "and on the task of `tests/test_models_train.py` it stalled the first epochs. Training batches stay "
             "random cells, not sets of one condition: batches of whole sets (8 conditions a batch) trained far "
             "slower while it was built."]
    with_kb = [r for r in results.get("tasks", []) if r.get("kb")]
    for r in with_kb:
        ours = r["entries"].get("harmonycell", {})
        lines += ["", f"- {r['title']}" + (f", {r['folds']}-fold" if int(r.get("folds", 1)) > 1 else "")
                  + f": reading the stored win, HarmonyCell selected {ours.get('action', 'nothing')}. "
                  + "; ".join(f"{n} vs this pick: {versus(e, 'harmonycell')}" for n, e in r["entries"].items()
                              if n != "harmonycell" and e.get("comparisons"))
                  + ". Table below (headed 'HarmonyCell reading a knowledge base')."]
    if not with_kb:
        lines += ["", "No task has been run reading a knowledge base with a stored win yet."]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)} (default: all)")
    ap.add_argument("--seeds", default="0", help="comma-separated split seeds (default: 0)")
    ap.add_argument("--experts", default=",".join(EXPERTS),
                    help=f"comma-separated, of {', '.join(EXPERTS)} (default: all); e.g. --experts gears "
                         "--tasks norman --seeds 0 runs GEARS alone on one task and split")
    ap.add_argument("--budget", type=int, default=3, help="HarmonyCell search budget (nodes)")
    ap.add_argument("--epochs", type=int, default=60, help="epoch cap for our nodes and the experts")
    ap.add_argument("--folds", type=int, default=1,
                    help="K >= 2: nested K-fold cross-validation over held-out units (harmonycell run --folds K)")
    ap.add_argument("--backend", default="auto", help="sandbox of HarmonyCell's own nodes")
    ap.add_argument("--render", action="store_true", help="only re-render docs/experts.md")
    ap.add_argument("--note", default="", help="a sentence recorded with these results (e.g. why epochs were cut)")
    ap.add_argument("--kb", type=Path, default=None,
                    help="a knowledge base: HarmonyCell's runs read it (so stored expert wins steer the search) "
                         "and every expert win measured here is stored in it; default: none (--no-kb)")
    ap.add_argument("--record-wins", action="store_true",
                    help="with --kb: store the expert wins of the results already in bench/results (of --tasks, "
                         "--folds and --experts), then stop")
    args = ap.parse_args()
    from harmonycell.tools.record import atomic

    if args.folds < 1:
        print(f"--folds {args.folds}: give 1 (one split) or K >= 2 folds", file=sys.stderr)
        return 2
    unknown = [k for k in args.tasks.split(",") if k not in TASKS] + [e for e in args.experts.split(",") if e and e not in EXPERTS]
    if unknown:
        print(f"unknown task or expert {', '.join(unknown)}: tasks are {', '.join(TASKS)}; experts "
              f"{', '.join(EXPERTS)}", file=sys.stderr)
        return 2
    if args.record_wins:
        if args.kb is None:
            print("--record-wins needs --kb PATH: the knowledge base to store the wins in", file=sys.stderr)
            return 2
        for res in json.loads(RESULTS.read_text()).get("tasks", []):
            if res["task"] in args.tasks.split(",") and int(res.get("folds", 1)) == args.folds:
                record_wins(res, args.kb.expanduser(), experts=args.experts.split(","))
        return 0
    if not args.render:
        experts = [e for e in args.experts.split(",") if e]
        results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
                   "install": {}, "tasks": []}
        for name in experts:
            py, why = ensure_venv(EXPERTS[name])
            results["install"][name] = "installed in its own venv" if py else f"cannot run here: {why}"
        for key in args.tasks.split(","):
            for seed in map(int, args.seeds.split(",")):
                if args.folds > 1:
                    results["tasks"].append(evaluate_task_folds(TASKS[key], seed, args.folds, experts, args.budget,
                                                                args.epochs, args.backend, args.kb))
                else:
                    results["tasks"].append(evaluate_task(TASKS[key], seed, experts, args.budget, args.epochs,
                                                          args.backend, args.kb))
                if args.kb:
                    record_wins(results["tasks"][-1], args.kb.expanduser())
        for res in results["tasks"]:
            if args.note:
                res["note"] = " " + args.note.strip()
        results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
        atomic.write_json(RESULTS, merge_results(old, results))
    results = json.loads(RESULTS.read_text())
    atomic.write_text(DOC, render(results))
    if any(int(r.get("folds", 1)) > 1 for r in results.get("tasks", [])):
        atomic.write_text(FOLD_CSV, fold_csv(results))
    print(f"[experts] wrote {RESULTS} and {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
