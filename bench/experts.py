"""Expert models beside HarmonyCell's pick, on the same cells, folds, queries and metrics.

    python bench/experts.py                                   # every task x seed x expert, then docs/experts.md
    python bench/experts.py --tasks norman --seeds 0,1,2 --experts biolord,gears
    python bench/experts.py --render                          # only re-render docs/experts.md from results
    python bench/experts.py --kb KB --record-wins --tasks papalexi   # store measured wins in a knowledge base

Each task is run as ``harmonycell run --folds K --seed S --no-kb`` (the project's nested
cross-validation: fold k of a seeded K-fold partition of the held-out units, the whole search
inside each fold, no fold reading another's search). Each fold's run folder holds the unified
data (host only), the sandbox folder (training cells, controls, queries, features) and the pick.
Each expert gets a virtual environment of its own (``.cache/experts/<name>/venv``, made here, so
the product's pins never bend to an expert's), reads the same sandbox folder through a small
adapter (``bench/expert_adapters/``) and writes ``pred_test.npy`` in the sandbox's format. The
host then scores every prediction (the pick, each expert's, each baseline's) with the scorer
every node gets, and keeps the per-query rows of the compared metrics; the fold's noise ceiling
(split-half technical duplicate of its held-out cells) is kept beside them.

Everything the doc says is computed from those rows when it is rendered (``analyse``), with the
code the Judge uses (``tools.evaluation.crossval``): per-query differences pooled over folds and
seeds with each held-out unit once, an exact sign-flip test, Holm-corrected over the baselines;
an undefined value is "not applicable", never 0. Each expert is also compared with the pick
(one test, paired the same way). An expert that cannot be installed or run here, or does not
apply to a task kind, is listed with the exact reason. Results: ``bench/results/experts.json``
(a new run replaces only the folds and predictors it ran); table: ``docs/experts.md``; per-fold
means: ``bench/results/experts_folds.csv``.

Where an expert beats the pick and a backbone of ours carries its idea (``knowledge.EXPERT_IDEAS``),
``--kb KB`` stores the win with the task's profile and data scope; a later run on a similar task
whose test units the win was not measured on tries that backbone first.
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
from harmonycell.tools.evaluation.ceiling import NOISE_CEILING  # noqa: E402
from harmonycell.tools.evaluation.compare import COMPARED_METRICS  # noqa: E402
from harmonycell.tools.evaluation.metrics import DEFINITIONS, FALLBACK_METRIC, SEARCH_METRIC  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / ".." / "shared" / "data" / "real"
CACHE = REPO / ".cache" / "experts"
RESULTS = REPO / "bench" / "results" / "experts.json"
FOLD_CSV = REPO / "bench" / "results" / "experts_folds.csv"
DOC = REPO / "docs" / "experts.md"
ADAPTERS = REPO / "bench" / "expert_adapters"
TORCH = "torch==2.13.0"  # the CPU build on this machine; an expert's venv never pulls CUDA torch
METRICS = COMPARED_METRICS  # the headline, its fallback, and two more reported beside them
PICK = "harmonycell"  # the entry of HarmonyCell's pick in a fold
BASELINES = ("control_mean", "train_mean", "linear", "linear_go", "additive")  # column order


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
    kinds: tuple[str, ...] | None = None  # the task kinds it can answer (None: every kind)
    not_for: str = ""     # why it cannot answer the other kinds


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
           "gears_adapter.py", prepare=gears_go.write_for_sandbox,
           idea="a gene graph: each perturbed gene's embedding is refined by message passing over a "
                "co-expression graph and a Gene Ontology graph (genes sharing GO terms), so a gene never "
                "perturbed in training borrows from its GO neighbours; the predicted shift of every gene is "
                "decoded per gene. Ours read a perturbation's GO features as a fixed vector (`linear_go`, the "
                "closed-form models) and pass no messages between genes.",
           kinds=("unseen-perturbation", "unseen-combination"),
           not_for="GEARS predicts gene perturbations within the cell types it trained on; it has no input "
                   "for a cell type it never saw"),
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


@dataclass(frozen=True)
class Settings:
    """How HarmonyCell's runs and the experts were run (results of other settings are never merged)."""
    folds: int = 3
    budget: int = 4           # nodes per fold's search (bench/search_picks.py's default)
    time_limit: str = "4m"    # per fold's search
    epochs: int = 20          # cap for our nodes and the experts
    backend: str = "auto"     # sandbox of HarmonyCell's own nodes

    def key(self) -> dict:
        return {"folds": self.folds, "budget": self.budget, "time_limit": self.time_limit, "epochs": self.epochs}


def run_command(task: Task, seed: int, s: Settings, out: Path, kb: Path | None = None) -> list[str]:
    # without --kb a benchmark neither reads nor writes the user's knowledge base
    return [sys.executable, "-m", "harmonycell.agents.cli", "run", *map(str, task_inputs(task)), "--task", task.kind,
            "--seed", str(seed), "--budget", str(s.budget), "--time-limit", s.time_limit, "--epochs", str(s.epochs),
            "--out", str(out), "--backend", s.backend, *(["--kb", str(kb)] if kb else ["--no-kb"]),
            "--folds", str(s.folds)]


def runs_root(task: Task, seed: int, s: Settings, kb: Path | None = None) -> Path:
    # a run of other settings, or one that read a knowledge base, is never reused for this one
    return CACHE / "runs" / (f"{task.key}-s{seed}-k{s.folds}-b{s.budget}-t{s.time_limit}-e{s.epochs}"
                             + (f"-kb-{kb.stem}" if kb else ""))


def harmonycell_cv(task: Task, seed: int, s: Settings, kb: Path | None = None) -> list[Path]:
    """The fold run folders of a finished ``harmonycell run --folds K`` (reused when one finished)."""
    root = runs_root(task, seed, s, kb)
    done = [p.parent for p in root.glob("cv-*/cv.json")]
    if not done:
        root.mkdir(parents=True, exist_ok=True)
        from harmonycell.tools.record import atomic

        atomic.write_json(root / "load.json", {"load_before": round(os.getloadavg()[0], 2)})
        t0 = time.time()
        subprocess.run(run_command(task, seed, s, root, kb), check=True)
        print(f"[experts] harmonycell run --folds {s.folds} {task.key} seed {seed}: {time.time() - t0:.0f} s", flush=True)
        done = [p.parent for p in root.glob("cv-*/cv.json")]
    return [done[0] / f"repeat0-fold{k}" for k in range(s.folds)]


def task_profile(run_dir: Path, kind: str) -> str:
    """The knowledge base's profile of a run's task (training cells only), as a run computes it."""
    import anndata as ad

    from harmonycell.tools.search.knowledge import task_profile_text

    return task_profile_text(ad.read_h5ad(run_dir / "unify" / "unified.h5ad"), kind)


def data_scope(run_dirs: list[Path]) -> dict:
    """The input files' fingerprint and the test units of these run folders (a task's folds)."""
    from harmonycell.tools.search.knowledge import DataScope, scope_of_run

    scopes = [scope_of_run(d) for d in run_dirs]
    merged = DataScope(scopes[0].dataset, tuple(sorted({u for sc in scopes for u in sc.test_units})))
    return {"dataset": merged.dataset, "test_units": list(merged.test_units)}


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
        load = round(os.getloadavg()[0], 2)
        t0 = time.time()
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.time() - t0
        if res.returncode != 0:
            return {"status": "failed", "reason": tail(res.stderr, 8), "wall_s": round(wall, 1)}
        from harmonycell.tools.record import atomic

        atomic.write_json(out / "wall.json", {"wall_s": round(wall, 1), "load_before": load})
        atomic.write_json(done, source)
    info = json.loads((out / "adapter_result.json").read_text())
    return {"status": "ok", "pred": str(out / "pred_test.npy"), **json.loads((out / "wall.json").read_text()),
            "peak_rss_mb": info.get("peak_rss_mb")}


def slim(rows) -> list[dict]:
    """Per-query rows with the compared metrics only (what the doc is computed from)."""
    return [{"condition": r.condition, "context": r.context,
             "metrics": {m: r.metrics.get(m) for m in METRICS}} for r in rows]


def score_file(adata, meta: dict, pred_path: Path) -> list[dict]:
    """The host's per-query rows of one prediction file (the same scorer as every node's)."""
    from harmonycell.tools.data.taskdata import queries_from_meta
    from harmonycell.tools.evaluation.scoring import score_prediction_file

    rep = score_prediction_file(adata, "test", pred_path, queries_from_meta(meta, "test"), genes=meta["genes"])
    return slim(rep.per_perturbation)


def pick_entry(run_dir: Path, adata, meta: dict) -> dict:
    """HarmonyCell's pick of a finished fold run, scored per query on the fold's test queries."""
    tested = next((r["content"] for r in map(json.loads, (run_dir / "transcript.jsonl").open())
                   if r.get("type") == "TestScored"), None)
    if not tested:
        verdict = json.loads((run_dir / "verdict.json").read_text())
        return {"status": "failed", "reason": "nothing was picked and tested: " + verdict.get("headline", "")}
    from harmonycell.tools.search.tree import Tree

    tree = Tree.load(run_dir / "tree.json")
    pick = tested["node_id"]
    # the largest node's training process; the host process (unification, scoring) is not counted
    peaks = [json.loads(p.read_text()).get("peak_rss_mb") for p in (run_dir / "nodes").glob("*/harness_result.json")]
    peaks = [p for p in peaks if p is not None]
    pred = run_dir / "nodes" / pick / "pred_test.npy"
    load = run_dir.parent.parent / "load.json"  # written before the fold runs started
    return {"status": "ok", "rows": score_file(adata, meta, pred), "action": tree.describe(pick),
            "wall_s": run_wall(run_dir), "peak_rss_mb": max(peaks) if peaks else None,
            "load_before": json.loads(load.read_text())["load_before"] if load.exists() else None}


def score_fold(run_dir: Path, task: Task, experts: list[str], seed: int, epochs: int, out_root: Path) -> dict:
    """Every predictor's per-query rows on one fold's test queries: the pick, each baseline, each
    expert (trained on this fold's sandbox folder), and the fold's noise ceiling."""
    import anndata as ad

    from harmonycell.tools.data.taskdata import load_meta
    from harmonycell.tools.evaluation.baselines import compute_baselines

    verdict = json.loads((run_dir / "verdict.json").read_text())
    adata = ad.read_h5ad(run_dir / "unify" / "unified.h5ad")
    meta = load_meta(run_dir / "data" / "sandbox")
    base = compute_baselines(adata, split="test")
    entries: dict[str, dict] = {PICK: pick_entry(run_dir, adata, meta)}
    entries.update({name: {"status": "ok", "rows": slim(rows)} for name, rows in base.per_query.items()})
    for name in experts:
        expert = EXPERTS[name]
        if expert.kinds is not None and task.kind not in expert.kinds:
            entries[name] = {"status": "not applicable", "reason": expert.not_for}
            continue
        py, why = ensure_venv(expert)
        if py is None:
            entries[name] = {"status": "cannot run here", "reason": why}
            continue
        res = run_expert(py, expert, run_dir, out_root / name, seed, epochs)
        if res["status"] == "ok":
            res["rows"] = score_file(adata, meta, Path(res.pop("pred")))
        entries[name] = res
        print(f"[experts] {out_root.relative_to(CACHE / 'out')} {name}: {res['status']} {res.get('wall_s')} s", flush=True)
    return {"seed": seed, "run": f"{run_dir.parent.name}/{run_dir.name}", "n_queries": len(meta["queries"]["test"]),
            "verdict": {k: verdict.get(k) for k in ("valid", "useful", "headline")},
            "ceiling": {m: base.baselines[NOISE_CEILING].get(m) for m in METRICS}, "entries": entries}


def evaluate_task(task: Task, seeds: list[int], s: Settings, experts: list[str], kb: Path | None = None) -> dict:
    """Every fold of every seed of one task (HarmonyCell's runs, then the experts on their folders)."""
    folds, runs = [], []
    for seed in seeds:
        fold_runs = harmonycell_cv(task, seed, s, kb)
        runs += fold_runs
        out = CACHE / "out" / runs_root(task, seed, s, kb).name
        folds += [{"fold": k, **score_fold(run_dir, task, experts, seed, s.epochs, out / f"fold{k}")}
                  for k, run_dir in enumerate(fold_runs)]
    return {"task": task.key, "title": task.title, "kind": task.kind, **s.key(), "backend": s.backend,
            "kb": kb.stem if kb else "", "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            # one profile for the task: the first fold's training cells (folds differ only in held-out units)
            "profile": task_profile(runs[0], task.kind),
            # every fold's test units: a win measured here was measured on each of them
            "scope": data_scope(runs), "per_fold": folds}


def models_of(res: dict) -> list[str]:
    """The pick and the experts of a task result, in the order they ran (baselines excluded)."""
    names = dict.fromkeys(n for f in res["per_fold"] for n in f["entries"])
    return [PICK] + [n for n in names if n in EXPERTS]


def fold_results(res: dict, model: str, against: tuple[str, ...] | None = None):
    """``crossval.FoldResult``s of one model: its rows beside the baselines' (or ``against``'s) of
    the same fold; seeds are the repeats."""
    from harmonycell.tools.evaluation.crossval import FoldResult

    seeds = sorted({f["seed"] for f in res["per_fold"]})
    out = []
    for f in res["per_fold"]:
        e = f["entries"].get(model, {})
        others = against or tuple(n for n in f["entries"] if n not in EXPERTS and n != PICK)
        out.append(FoldResult(repeat=seeds.index(f["seed"]), fold=f["fold"], valid="rows" in e,
                              model_rows=e.get("rows", []), ceiling=f.get("ceiling", {}),
                              baseline_rows={n: f["entries"][n]["rows"] for n in others
                                             if "rows" in f["entries"].get(n, {})}))
    return out


def analyse(res: dict) -> dict:
    """Everything the doc says about one task, computed from the stored per-query rows: each
    model's cross-validation summary against the baselines (sign-flip, Holm), its usefulness on
    the deciding metric, each expert against the pick, and the models that ran in some fold."""
    from harmonycell.tools.evaluation.compare import deciding_metric, usefulness
    from harmonycell.tools.evaluation.crossval import pooled_comparisons, summarise

    seeds = sorted({f["seed"] for f in res["per_fold"]})
    cv = {m: summarise(fold_results(res, m), res["folds"], len(seeds), METRICS) for m in models_of(res)}
    decides = deciding_metric(cv[PICK].comparisons)
    ran = [m for m in models_of(res) if any(f["entries"].get(m, {}).get("rows") for f in res["per_fold"])]
    out = {"seeds": seeds, "decides": decides, "cv": cv, "ran": ran, "useful": {}, "vs_pick": {}}
    for m in models_of(res):
        out["useful"][m] = usefulness(cv[m].comparisons, decides)
        if m != PICK:
            folds = [f for f in fold_results(res, m, against=(PICK,)) if f.model_rows and f.baseline_rows]
            out["vs_pick"][m] = next((c for c in pooled_comparisons(folds, (decides,))), None) if folds else None
    return out


def status_of(res: dict, model: str) -> tuple[str, str]:
    """(status over the folds, the first reason) of one model in a task result."""
    missing = {"status": "not run", "reason": "left out of the invocation that ran this fold (`--experts`), for time"}
    runs = [f["entries"].get(model, missing) for f in res["per_fold"]]
    ok = sum(1 for e in runs if "rows" in e)
    if ok == len(runs):
        return "ok", ""
    first = next(e for e in runs if "rows" not in e)
    return (f"ok in {ok} of {len(runs)} folds" if ok else first["status"]), first.get("reason", "")


def over_folds(res: dict, model: str, key: str, how: Callable = lambda v: sum(v) / len(v)) -> float | None:
    """``how`` (default: the mean) of one model's ``key`` (wall_s, peak_rss_mb) over the folds that recorded it."""
    vals = [v for v in (f["entries"].get(model, {}).get(key) for f in res["per_fold"]) if v is not None]
    return how(vals) if vals else None


def loads(res: dict, model: str) -> str:
    """The 1-minute load averages before a model's folds were trained (timings count below 1.5)."""
    lo, hi = over_folds(res, model, "load_before", min), over_folds(res, model, "load_before", max)
    return "" if lo is None else f" ({lo:.2f})" if lo == hi else f" ({lo:.2f}-{hi:.2f})"


def expert_wins(res: dict) -> list[dict]:
    """The experts that beat HarmonyCell's pick on this result (sign-flip test on the deciding
    metric) and have a backbone of ours carrying their idea."""
    from harmonycell.tools.search.knowledge import EXPERT_IDEAS

    out = []
    for name, c in analyse(res)["vs_pick"].items():
        if name in EXPERT_IDEAS and c is not None and c.conclusion == "better":
            out.append({"expert": name, "backbone": EXPERT_IDEAS[name], "metric": c.metric,
                        "delta": c.mean_diff, "lo": c.ci_low, "hi": c.ci_high, "n": c.n})
    return out


def record_wins(res: dict, kb: Path, experts: list[str] | None = None) -> list[int]:
    """Store each expert win of ``res`` (of ``experts`` only, when given) in the knowledge base,
    with the task's profile and the test units it was measured on."""
    from harmonycell.tools.search.knowledge import DataScope, ExpertWin, KnowledgeBase, embed

    store, ids = KnowledgeBase(kb), []
    wins = [w for w in expert_wins(res) if experts is None or w["expert"] in experts]
    if not wins:
        return ids
    profile = res["profile"]
    scope = DataScope(res["scope"]["dataset"], tuple(res["scope"]["test_units"]))
    vec = embed([profile])[0]
    label = f"{res['task']}, {res['folds']}-fold, seeds {','.join(map(str, sorted({f['seed'] for f in res['per_fold']})))}"
    for w in wins:
        ids.append(store.add_expert_win(ExpertWin(task=label, profile=profile, embedding=vec, scope=scope,
                                                  source="bench/experts.py (bench/results/experts.json)", **w)))
        print(f"[experts] {label}: {w['expert']} beat HarmonyCell's pick ({w['delta']:+.3f} [{w['lo']:.3f}, "
              f"{w['hi']:.3f}], n={w['n']}); stored in {store.path}: a similar task tries {w['backbone']} first", flush=True)
    return ids


def result_key(res: dict) -> tuple:
    return res["task"], int(res["folds"]), str(res.get("kb") or "")


def merge_task(old: dict, new: dict) -> dict:
    """``new``'s folds over ``old``'s: a fold (seed, fold) run again keeps the predictors it did
    not run this time; other seeds' folds are kept. Results of other settings are replaced."""
    if {k: old.get(k) for k in Settings().key()} != {k: new.get(k) for k in Settings().key()}:
        return new
    folds = {(f["seed"], f["fold"]): f for f in old["per_fold"]}
    for f in new["per_fold"]:
        prev = folds.get((f["seed"], f["fold"]))
        same_run = prev is not None and prev["run"] == f["run"]
        folds[(f["seed"], f["fold"])] = {**f, "entries": {**(prev["entries"] if same_run else {}), **f["entries"]}}
    per_fold = [folds[k] for k in sorted(folds)]
    return {**new, "per_fold": per_fold, "scope": {"dataset": new["scope"]["dataset"], "test_units": sorted(
        set(old["scope"]["test_units"]) | set(new["scope"]["test_units"]))}}


def merge_results(old: dict | None, new: dict) -> dict:
    """``new`` over ``old``: a task result merges into the one of the same task, fold count and
    knowledge base (``merge_task``); install statuses are updated per expert; the rest is kept."""
    if not old:
        return new
    by_key = {result_key(r): r for r in old.get("tasks", [])}
    for r in new["tasks"]:
        k = result_key(r)
        by_key[k] = merge_task(by_key[k], r) if k in by_key else r
    order = {k: i for i, k in enumerate(TASKS)}
    tasks = sorted(by_key.values(), key=lambda r: (order.get(r["task"], len(order)), r["folds"], str(r.get("kb") or "")))
    return {**old, **{k: v for k, v in new.items() if k not in ("install", "tasks")},
            "install": {**old.get("install", {}), **new.get("install", {})}, "tasks": tasks}


FOLD_COLUMNS = ("task", "seed", "folds", "fold", "run", "model", "status", "n_queries", *METRICS,
                "wall_s", "peak_rss_mb")


def fold_csv(results: dict) -> str:
    """Per fold and predictor: the mean of each metric over the fold's queries (undefined left out)."""
    import csv
    import io

    from harmonycell.tools.evaluation.crossval import fold_mean

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FOLD_COLUMNS, lineterminator="\n")
    w.writeheader()
    for res in results.get("tasks", []):
        for f in res["per_fold"]:
            for name, e in f["entries"].items():
                w.writerow({"task": res["task"], "seed": f["seed"], "folds": res["folds"], "fold": f["fold"],
                            "run": f["run"], "model": name, "status": e["status"], "n_queries": f["n_queries"],
                            **{m: fold_mean(e["rows"], m) if "rows" in e else None for m in METRICS},
                            "wall_s": e.get("wall_s"), "peak_rss_mb": e.get("peak_rss_mb")})
    return buf.getvalue()


def fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def spread_cell(s) -> str:
    if s is None or s.mean is None:
        return "n/a"
    return f"{s.mean:.3f} ± {s.sd:.3f}" if s.sd is not None else f"{s.mean:.3f}"


def comparison_cell(c) -> str:
    if c is None:
        return "-"
    if c.mean_diff is None:
        return f"n/a **{c.conclusion}**"
    return f"{c.mean_diff:+.3f} [{fmt(c.ci_low)}, {fmt(c.ci_high)}] n={c.n} **{c.conclusion}**"


def label(res: dict, model: str) -> str:
    if model != PICK:
        return model
    actions = dict.fromkeys(f["entries"][PICK]["action"] for f in res["per_fold"] if "action" in f["entries"].get(PICK, {}))
    return "HarmonyCell's pick" + (f" ({'; '.join(actions)})" if actions else "")


def render_task(res: dict) -> tuple[list[str], dict]:
    a = analyse(res)
    seeds, decides, cv = a["seeds"], a["decides"], a["cv"]
    first = cv[PICK]
    shown = [b for b in BASELINES if b in first.spread] + [b for b in first.spread if b not in BASELINES
                                                            and b not in ("model", NOISE_CEILING)]
    lines = ["", f"## {res['title']}", "",
             f"Task `{res['kind']}`, {res['folds']} folds x {len(seeds)} split seed(s) ({', '.join(map(str, seeds))}): "
             f"{first.n_queries} distinct test queries, {sum(f['n_queries'] for f in res['per_fold'])} over all folds. "
             f"HarmonyCell: `harmonycell run --folds {res['folds']} --budget {res['budget']} --time-limit "
             f"{res['time_limit']} --epochs {res['epochs']} --no-kb` (sandbox `{res['backend']}`); the experts train "
             f"on each fold's sandbox folder with the same epoch cap (STATE: {res['epochs']} passes over the training "
             f"cells, at most 1500 steps). Last finished {res['finished']}.", "",
             "| predictor | status | " + " | ".join(METRICS) + " | wall s per fold (load before) | peak MB |",
             "|---|---|" + "---|" * len(METRICS) + "---|---|"]
    for b in shown:
        lines.append(f"| baseline: {b} | ok | " + " | ".join(spread_cell(first.spread[b][m]) for m in METRICS) + " | | |")
    if NOISE_CEILING in first.spread:
        lines.append(f"| {NOISE_CEILING} (positive control) | ok | "
                     + " | ".join(spread_cell(first.spread[NOISE_CEILING][m]) for m in METRICS) + " | | |")
    for m in models_of(res):
        status, why = status_of(res, m)
        if m not in a["ran"]:
            lines.append(f"| {label(res, m)} | {status}: {why[:200]} | " + " | " * len(METRICS) + " |")
            continue
        note = f"{status} ({why[:120]})" if why else status
        lines.append(f"| {label(res, m)} | {note} | " + " | ".join(spread_cell(cv[m].spread["model"][mm]) for mm in METRICS)
                     + f" | {fmt(over_folds(res, m, 'wall_s'), 0)}{loads(res, m)} | {fmt(over_folds(res, m, 'peak_rss_mb', max), 0)} |")
    ran = a["ran"]
    lines += ["", f"Paired comparisons on `{decides}`, the metric that decides here (model - baseline, and "
                  "expert - HarmonyCell's pick; each query once, averaged over the folds and seeds that tested it; "
                  "95% sign-flip interval per comparison; exact sign-flip test, Holm over the baselines; "
                  "`better`/`worse` only where the Holm-adjusted test rejects):", "",
              "| model | " + " | ".join(shown) + " | vs HarmonyCell's pick |", "|---" * (len(shown) + 2) + "|"]
    for m in ran:
        useful, deciding = a["useful"][m]
        lines.append(f"| {label(res, m)} | " + " | ".join(comparison_cell(deciding.get(b)) for b in shown)
                     + f" | {'' if m == PICK else comparison_cell(a['vs_pick'].get(m))} |")
    no_pick = sum(1 for f in res["per_fold"] if "rows" not in f["entries"].get(PICK, {}))
    winners = [m for m in ran if a["useful"][m][0]]
    beats_pick = [m for m in ran if m != PICK and a["vs_pick"].get(m) and a["vs_pick"][m].conclusion == "better"]
    below_pick = [m for m in ran if m != PICK and a["vs_pick"].get(m) and a["vs_pick"][m].conclusion == "worse"]
    lines += ["", (f"Better than every baseline on {decides}: {', '.join(label(res, m) for m in winners)}."
                   if winners else f"**Nothing here, HarmonyCell's pick or an expert, is better than every baseline "
                                   f"on {decides}.**")
              + (f" Better than HarmonyCell's pick: {', '.join(beats_pick)}." if beats_pick else
                 " No expert is better than HarmonyCell's pick.")
              + (f" Worse than it: {', '.join(below_pick)}." if below_pick else "")
              + (f" {no_pick} fold(s) had no pick." if no_pick else "")]
    return lines, {"title": res["title"], "decides": decides, "winners": winners, "beats_pick": beats_pick,
                   "pick_useful": a["useful"][PICK][0] if PICK in ran else False}


def render(results: dict) -> str:
    from harmonycell.tools.evaluation.ceiling import CEILING_DEFINITION
    from harmonycell.tools.search.actions import all_backbone_paths, closed_form
    from harmonycell.tools.search.knowledge import EXPERT_IDEAS

    lines = ["# Expert models beside HarmonyCell", "",
             "Generated by `python bench/experts.py` from `../shared/data/real/` (`--render` re-renders from "
             "`bench/results/experts.json`); do not edit by hand. Every prediction (HarmonyCell's pick, each "
             "expert's, each baseline's) is scored on the host by the same scorer on the same test queries of the "
             "same fold; the experts train on the fold's sandbox folder (training cells and control cells, never a "
             "held-out target). Every number below is computed from the stored per-query rows with the code the "
             "Judge uses (`harmonycell.tools.evaluation.crossval`).", "",
             f"`{SEARCH_METRIC}` decides: {DEFINITIONS[SEARCH_METRIC]}",
             f"Where it is undefined (every context holds one test query, as for a held-out cell type) "
             f"`{FALLBACK_METRIC}` decides: {DEFINITIONS[FALLBACK_METRIC]}",
             f"`{NOISE_CEILING}`: {CEILING_DEFINITION}",
             "DeltaPCC and RMSE are reported beside them and never decide. Metric cells read `mean ± sd` over the "
             "folds' aggregates. Wall s: a fold's whole HarmonyCell run (audit, search, test, Judge), or an expert's "
             "training and prediction; peak MB: an expert's training process, or HarmonyCell's largest node's "
             "(the host process is not counted).", "",
             f"Machine: {results.get('machine')}. Last finished {results.get('finished')}.", "",
             "## Experts", "", "| expert | paper | status here |", "|---|---|---|"]
    for name, e in EXPERTS.items():
        status = results.get("install", {}).get(name) or (f"cannot run here: {e.why_not}" if e.adapter is None
                                                          else "not attempted")
        applies = f"; task kinds: {', '.join(e.kinds)} only ({e.not_for})" if e.kinds else ""
        lines.append(f"| {name} | {e.paper} | {status}{applies} |")
    # the networks the experts' ideas were compared with (the closed-form models came later)
    ours = ", ".join(p.split("/")[1] for p in all_backbone_paths()
                     if p not in EXPERT_IDEAS.values() and not closed_form(p))
    lines += ["", f"What each expert has that HarmonyCell's original networks (`tools/search/actions.py`: {ours}) "
              "lack, and the backbone that now carries it:", "",
              *[f"- {name}: {e.idea}" + (f" Now carried by `{EXPERT_IDEAS[name]}` (next section)."
                                         if name in EXPERT_IDEAS else " No backbone of ours carries it.")
                for name, e in EXPERTS.items() if e.idea]]
    lines += render_learnt()
    summary = []
    for res in results.get("tasks", []):
        body, s = render_task(res)
        lines += body
        summary.append(s)
    lines += ["", "## Summary", ""]
    for s in summary:
        lines.append(f"- {s['title']} ({s['decides']}): HarmonyCell's pick is "
                     + ("better than every baseline" if s["pick_useful"] else "not better than every baseline")
                     + "; " + (f"experts better than it: {', '.join(s['beats_pick'])}" if s["beats_pick"]
                               else "no expert is better than it")
                     + "; " + (f"experts better than every baseline: {', '.join(w for w in s['winners'] if w != PICK)}"
                               if any(w != PICK for w in s["winners"]) else "no expert is better than every baseline")
                     + ".")
    return "\n".join(lines) + "\n"


def render_learnt() -> list[str]:
    """How an expert's win changes the search (what it was measured to do is not claimed)."""
    from harmonycell.tools.search.knowledge import EXPERT_IDEAS

    return ["", "## What the search takes from the experts", "",
            "An expert better than HarmonyCell's pick on a task (the sign-flip test above) that has a backbone of "
            "ours carrying its idea (`tools/search/knowledge.py` `EXPERT_IDEAS`: "
            + ", ".join(f"{e} -> `{b}`" for e, b in EXPERT_IDEAS.items())
            + ") can be stored in a knowledge base (`python bench/experts.py --kb KB --record-wins`), with the task's "
            "profile and the test units it was measured on. A run whose task profile is similar enough to "
            "warm-start, and which shares none of those test units, retrieves the win and expands that backbone "
            "first (`harmonycell kb list` shows stored wins; `harmonycell kb forget-expert ID` drops one). No "
            "effect of this on accuracy is claimed here: it has not been measured leave-one-dataset-out over "
            "three seeds.",
            "", "`discriminative/attribute-decoder` (`tools/search/model_templates/attribute_decoder.py`) takes from "
            "biolord the separate embedding per attribute (the cell's basal state through a narrow, unit-scaled, "
            "noise-regularised bottleneck; the perturbation through the shared perturbation encoder), one decoder "
            "reading their concatenation, and prediction by swapping the perturbation attribute: the decoder's "
            "contrast between the queried perturbation and none on a control cell's basal state, added to that "
            "cell. It leaves out biolord's auto-decoder (every cell reconstructed from its own free latent): added "
            "to the swap loss, that reconstruction term made the decoder ignore the perturbation on the synthetic "
            "task of `tests/test_models_train.py`.",
            "", "`discriminative/set-transformer` (`tools/search/model_templates/set_transformer.py`) takes from "
            "STATE the set: the cells of a batch that share a perturbation attend to each other (self-attention "
            "masked to the set), so a set of control cells maps to a set of perturbed cells; a query's control "
            "cells are one set. STATE's distributional loss (energy distance between the predicted and observed "
            "sets) is a refinement, `hparams:energy_weight=...`, off by default."]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)} (default: all)")
    ap.add_argument("--seeds", default="0", help="comma-separated split seeds, the repeats (default: 0)")
    ap.add_argument("--experts", default=",".join(EXPERTS),
                    help=f"comma-separated, of {', '.join(EXPERTS)} (default: all); e.g. --experts gears "
                         "--tasks norman runs GEARS alone (the other predictors of the same folds are kept)")
    d = Settings()
    ap.add_argument("--folds", type=int, default=d.folds, help="K >= 2 folds over the held-out units")
    ap.add_argument("--budget", type=int, default=d.budget, help="HarmonyCell's nodes per fold")
    ap.add_argument("--time-limit", default=d.time_limit, help="HarmonyCell's search time per fold")
    ap.add_argument("--epochs", type=int, default=d.epochs, help="epoch cap for our nodes and the experts")
    ap.add_argument("--backend", default=d.backend, help="sandbox of HarmonyCell's own nodes")
    ap.add_argument("--render", action="store_true", help="only re-render docs/experts.md")
    ap.add_argument("--kb", type=Path, default=None,
                    help="a knowledge base: HarmonyCell's runs read it and every expert win measured here is "
                         "stored in it; default: none (--no-kb)")
    ap.add_argument("--record-wins", action="store_true",
                    help="with --kb: store the expert wins of the results already in bench/results (of --tasks "
                         "and --experts), then stop")
    args = ap.parse_args()
    from harmonycell.tools.record import atomic

    if args.folds < 2:
        print(f"--folds {args.folds}: give K >= 2 (a single split of held-out units decides too little)", file=sys.stderr)
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
            if res["task"] in args.tasks.split(","):
                record_wins(res, args.kb.expanduser(), experts=args.experts.split(","))
        return 0
    if not args.render:
        s = Settings(args.folds, args.budget, args.time_limit, args.epochs, args.backend)
        experts = [e for e in args.experts.split(",") if e]
        install = {}
        for name in experts:
            py, why = ensure_venv(EXPERTS[name])
            install[name] = "installed in its own venv" if py else f"cannot run here: {why}"
        for key in args.tasks.split(","):
            res = evaluate_task(TASKS[key], [int(x) for x in args.seeds.split(",")], s, experts, args.kb)
            if args.kb:
                record_wins(res, args.kb.expanduser())
            old = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
            # written after every task: a long bench killed half-way keeps what it measured
            atomic.write_json(RESULTS, merge_results(old, {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU", "install": install,
                "tasks": [res], "finished": res["finished"]}))
    results = json.loads(RESULTS.read_text())
    atomic.write_text(DOC, render(results))
    atomic.write_text(FOLD_CSV, fold_csv(results))
    print(f"[experts] wrote {RESULTS} and {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
