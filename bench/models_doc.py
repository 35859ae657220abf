"""Regenerate docs/models.md: every backbone trained through the sandbox on the real tasks,
scored on the host beside the baselines of the same split.

    python bench/models_doc.py            # all tasks, then render docs/models.md
    python bench/models_doc.py --task kang # one task (results cached per task)
    python bench/models_doc.py --render    # only re-render from cached results

Per-task results go to bench/results/models_<task>.json (committed: the numbers docs/models.md quotes); the doc is rendered from
whichever of them exist, so tasks can be run separately (or in parallel) and combined.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harmonycell.tools.record import atomic

ROOT = Path.cwd()
REAL = ROOT / ".." / "shared" / "data" / "real"
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "models.md"
METRICS = ("DeltaPCC", "PCC_Delta_shift_corrected", "Cosine_delta", "RMSE", "Discrimination_rank")
BASELINES = ("control_mean", "train_mean", "linear")


@dataclass(frozen=True)
class RealTask:
    key: str
    title: str
    file: str
    kind: str
    subset: tuple[str, str] | None = None  # (obs column, value) kept before unification


TASKS = {t.key: t for t in (
    RealTask("norman", "Norman 2019 K562 CRISPRa, unseen perturbation (perturbench devel file, norman19 cells)",
             "norman_mcfaline_perturbench_devel.h5ad", "unseen-perturbation", ("dataset", "norman19")),
    RealTask("papalexi", "Papalexi 2021 THP-1 ECCITE-seq, unseen perturbation",
             "papalexi_eccite_lowmoi.h5ad", "unseen-perturbation"),
    RealTask("kang", "Kang 2018 PBMC IFN-beta, unseen cell type (scgen file)",
             "kang_scgen_valid.h5ad", "unseen-cell-context"),
)}


def build_task(task: RealTask, work: Path, seed: int = 0):
    import anndata as ad

    from harmonycell.tools.data.unify import unify

    src = REAL / task.file
    if task.subset:
        col, val = task.subset
        full = ad.read_h5ad(src)
        part = full[full.obs[col].astype(str) == val].copy()
        src = work / task.file  # outside the repo: data are never copied into it
        part.write_h5ad(src)
    return unify([src], task.kind, seed).adata


def run_task(task: RealTask, actions: list[str], seed: int = 0, cache: Path | None = None) -> dict:
    from harmonycell.agents.cli.train import train_node
    from harmonycell.tools.evaluation.baselines import compute_baselines
    from harmonycell.tools.data.taskdata import export_sandbox_data

    with tempfile.TemporaryDirectory(prefix=f"models-doc-{task.key}-") as tmp:
        work = Path(tmp)
        adata = build_task(task, work, seed)
        data = work / "data"
        meta = export_sandbox_data(adata, data)
        base = compute_baselines(adata, split="test")
        # resume: runs already finished for this task and seed are kept (written after each run)
        done = {}
        if cache is not None and cache.exists():
            prev = json.loads(cache.read_text())
            if prev.get("seed") == seed:
                done = {r["action"]: r for r in prev.get("runs", [])}
        rows = []
        for action in actions:
            from harmonycell.tools.search.actions import parse_action

            if parse_action(action).text() in done:
                rows.append(done[parse_action(action).text()])
                continue
            t0 = time.time()
            rep = train_node(adata, action, work / action.replace("/", "_"), backend="local",
                             seed=seed, data_dir=data, with_baselines=False)
            rows.append(rep.model_dump(mode="json") | {"elapsed_s": round(time.time() - t0, 1)})
            print(f"[models_doc] {task.key} {action}: {rep.status} {rep.wall_s:.1f}s "
                  f"DeltaPCC={rep.metrics.get('DeltaPCC')}", flush=True)
            if cache is not None:
                atomic.write_json(cache, summary(task, seed, adata, meta, base, rows, partial=True))
    return summary(task, seed, adata, meta, base, rows)


def summary(task: RealTask, seed: int, adata, meta: dict, base, rows: list[dict], partial: bool = False) -> dict:
    return {
        "task": task.key, "title": task.title, "kind": task.kind, "seed": seed,
        "cells": int(adata.n_obs), "genes": int(adata.n_vars),
        "train_cells": meta["n_train_cells"], "test_queries": len(meta["queries"]["test"]),
        "baselines": base.baselines, "linear_fallbacks": base.fallbacks.get("linear").model_dump()
        if base.fallbacks.get("linear") else None,
        "runs": rows, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "threads": os.environ.get("HARMONYCELL_THREADS", "torch default"),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "partial": partial,
    }


def fmt(v, digits=3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def render(results: list[dict]) -> str:
    lines = [
        "# Model library on the real tasks",
        "",
        "Regenerate with `python bench/models_doc.py` (from the repository root; it",
        "reads `../shared/data/real/`). Every backbone runs with its default refinements through the",
        "sandbox (local backend, CPU) and is scored on the host by `harmonycell.tools.evaluation.scoring`",
        "beside the baselines of the same test split (`harmonycell.tools.evaluation.baselines`). DeltaPCC is",
        "against the test control mean; `PCC_Delta_shift_corrected` takes deltas against the mean",
        "of perturbed training cells (removes the shift all perturbations share);",
        "`Discrimination_rank`: 0 = the prediction is closest to its own perturbation, 0.5 = random.",
        "Generative models are scored on their mean prediction.",
        "",
    ]
    verdicts = []
    for r in results:
        lines += [f"## {r['title']}", "",
                  f"Task `{r['kind']}`: {r['cells']} cells x {r['genes']} genes, {r['train_cells']} training "
                  f"cells, {r['test_queries']} test queries. {r['machine']}, sandbox threads: {r['threads']}; "
                  f"finished {r['finished']}.", ""]
        if r.get("partial"):
            lines += [f"**Partial: only {len(r['runs'])} backbone(s) finished when this table was rendered.**", ""]
        head = "| model | status | wall s | epochs (best) | " + " | ".join(METRICS) + " |"
        lines += [head, "|" + "---|" * (4 + len(METRICS))]
        for name in BASELINES:
            b = r["baselines"].get(name)
            if b:
                lines.append(f"| baseline: {name} | - | - | - | " + " | ".join(fmt(b.get(m)) for m in METRICS) + " |")
        tm = r["baselines"].get("train_mean", {})
        winners = []
        for run in r["runs"]:
            m = run["metrics"]
            ep = f"{run['epochs_run']} ({run['best_epoch']})" if run.get("epochs_run") else "-"
            lines.append(f"| {run['action']} | {run['status']} | {fmt(run['wall_s'], 1)} | {ep} | "
                         + " | ".join(fmt(m.get(k)) for k in METRICS) + " |")
            if all(m.get(k) is not None and tm.get(k) is not None and m[k] > tm[k]
                   for k in ("DeltaPCC", "PCC_Delta_shift_corrected")):
                winners.append(run["action"])
        if r.get("linear_fallbacks") and r["linear_fallbacks"].get("n"):
            fb = r["linear_fallbacks"]
            lines += ["", f"Linear baseline: {fb['n']} of {fb['of']} queries fell back to the train-mean shift ({fb['why']})."]
        verdict = (f"Beats the train-mean shift on both DeltaPCC and the shift-corrected PCC: {', '.join(winners)}."
                   if winners else
                   "**No backbone beats the train-mean shift on both DeltaPCC and the shift-corrected PCC on this task.**")
        lines += ["", verdict, ""]
        verdicts.append((r["title"], winners))
    lines += action_space_section()
    lines += ["## Summary", ""]
    for title, winners in verdicts:
        lines.append(f"- {title}: {len(winners)} of 5 backbones beat the train-mean shift on both metrics.")
    lines += ["", "## GPU", "",
              "Not measured: the task that produced this table had no GPU machine. The harness records",
              "`peak_gpu_mem_bytes` and per-epoch seconds (`train_log.jsonl`) when it runs on CUDA;",
              "rerun this command on a GPU host to fill in epoch times and peak memory.", ""]
    return "\n".join(lines)


def action_space_section() -> list[str]:
    from harmonycell.tools.search.actions import BACKBONES, COMMON_PARAMS, LOSSES, fmt as pfmt

    lines = ["## The action space (harmonycell.tools.search.actions)", "",
             "Paths read `paradigm/backbone[/refinement...]`, refinements `hparams:NAME=VALUE,...` or",
             f"`loss:{'|'.join(LOSSES)}`; a segment naming a paradigm or backbone below level 2 is rejected.", "",
             "| backbone path | what it is | own parameters (default, range) |", "|---|---|---|"]
    for b in BACKBONES.values():
        own = ", ".join(f"{p.name} {pfmt(p.default)} [{pfmt(p.low)}, {pfmt(p.high)}]" for p in b.extra) or "-"
        lines.append(f"| {b.paradigm}/{b.name} | {b.description} | {own} |")
    common = ", ".join(f"{p.name} {pfmt(p.default)} [{pfmt(p.low)}, {pfmt(p.high)}]" for p in COMMON_PARAMS)
    lines += ["", f"Shared by all: {common}.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    from harmonycell.tools.search.actions import all_backbone_paths

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(TASKS), action="append")
    ap.add_argument("--render", action="store_true", help="only re-render docs/models.md")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--action", action="append", help="default: every backbone path")
    args = ap.parse_args(argv)
    os.environ.setdefault("HARMONYCELL_THREADS", "1")  # 2-core hosts: oversubscription costs 10x+
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.render:
        for key in args.task or list(TASKS):
            cache = RESULTS / f"models_{key}.json"
            res = run_task(TASKS[key], args.action or all_backbone_paths(), args.seed, cache=cache)
            atomic.write_json(cache, res)
    results = [json.loads((RESULTS / f"models_{k}.json").read_text())
               for k in TASKS if (RESULTS / f"models_{k}.json").exists()]
    atomic.write_text(DOC, render(results))
    print(f"[models_doc] wrote {DOC} ({len(results)} task(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
