"""Regenerate docs/models.md: every backbone trained through the sandbox on the real tasks,
scored on the host beside the baselines of the same split.

    python bench/models_doc.py --folds 3 --repeats 1 --epochs 20   # all tasks, then render
    python bench/models_doc.py --task kang                          # one task (cached per task)
    python bench/models_doc.py --render                             # only re-render from cache

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
from harmonycell.tools.evaluation.ceiling import NOISE_CEILING  # noqa: E402
from harmonycell.tools.evaluation.compare import COMPARED_METRICS  # noqa: E402
from harmonycell.tools.evaluation.metrics import DEFINITIONS, FALLBACK_METRIC, SEARCH_METRIC  # noqa: E402

METRICS = COMPARED_METRICS  # the headline, its fallback where a pool holds one query, two more beside
BASELINES = ("control_mean", "train_mean", "linear", "linear_go", "additive")  # column order; linear_go: where the held-out genes are known; additive: pairs


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
    RealTask("norman_pairs", "Norman 2019 K562 CRISPRa, unseen pair (perturbench devel file, norman19 cells)",
             "norman_mcfaline_perturbench_devel.h5ad", "unseen-combination", ("dataset", "norman19")),
    RealTask("papalexi", "Papalexi 2021 THP-1 ECCITE-seq, unseen perturbation",
             "papalexi_eccite_lowmoi.h5ad", "unseen-perturbation"),
    RealTask("kang", "Kang 2018 PBMC IFN-beta, unseen cell type (scgen file)",
             "kang_scgen_valid.h5ad", "unseen-cell-context"),
)}


def build_task(task: RealTask, work: Path, seed: int = 0, fold: tuple[int, int] | None = None):
    import anndata as ad

    from harmonycell.tools.data.unify import unify

    src = REAL / task.file
    if task.subset:
        col, val = task.subset
        src = work / task.file  # outside the repo: data are never copied into it
        if not src.exists():
            full = ad.read_h5ad(REAL / task.file)
            full[full.obs[col].astype(str) == val].copy().write_h5ad(src)
    return unify([src], task.kind, seed, fold=fold).adata


def run_fold(task: RealTask, actions: list[str], work: Path, seed: int, fold: tuple[int, int],
             epochs: int, done: dict) -> dict:
    """One outer fold: split (genes chosen on its training cells), baselines, every backbone."""
    from harmonycell.agents.cli.train import train_node
    from harmonycell.tools.data.taskdata import export_sandbox_data
    from harmonycell.tools.evaluation.baselines import compute_baselines
    from harmonycell.tools.search.actions import parse_action

    t0 = time.time()
    adata = build_task(task, work, seed, fold)
    tag = f"s{seed}f{fold[0]}"
    data = work / f"data-{tag}"
    meta = export_sandbox_data(adata, data)
    unified = work / f"unified-{tag}.h5ad"  # written once, linked into each node's run
    adata.write_h5ad(unified)
    base = compute_baselines(adata, split="test")
    runs = []
    for action in actions:
        key = f"{tag}:{parse_action(action).text()}"
        if key in done:  # resumed: this fold's backbone already ran
            runs.append(done[key])
            continue
        # carried as a search node is (agents.node_run), scored on the host beside the baselines
        rep = train_node(unified, action, work / f"{tag}-{action.replace('/', '_')}", backend="local",
                         seed=seed, data_dir=data, epochs=epochs)
        rows = []
        if rep.status == "ok" and rep.predictions_sha256 is not None:
            rows = json.loads((Path(rep.node_dir) / "test_scores.json").read_text())["per_perturbation"]
        runs.append({"key": key, "action": rep.action, "status": rep.status, "wall_s": rep.wall_s,
                     "attempts": rep.attempts, "epochs_run": rep.epochs_run, "best_epoch": rep.best_epoch,
                     "rows": rows})
        print(f"[models_doc] {task.key} {tag} {action}: {rep.status} {rep.wall_s:.1f}s "
              f"{SEARCH_METRIC}={rep.metrics.get(SEARCH_METRIC)}", flush=True)
    return {"seed": seed, "fold": fold[0], "cells": int(adata.n_obs), "genes": int(adata.n_vars),
            "train_cells": meta["n_train_cells"], "test_queries": len(meta["queries"]["test"]),
            "baseline_rows": {n: [r.model_dump() for r in rows] for n, rows in base.per_query.items()},
            "linear_fallbacks": base.fallbacks["linear"].model_dump(include={"n", "of", "why"}),
            "ceiling": base.baselines[NOISE_CEILING],
            "runs": runs, "seconds": round(time.time() - t0, 1)}


def run_task(task: RealTask, actions: list[str], seed: int = 0, cache: Path | None = None,
             folds: int = 3, repeats: int = 1, epochs: int = 20) -> dict:
    done: dict = {}
    prev_folds: list[dict] = []
    if cache is not None and cache.exists():
        prev = json.loads(cache.read_text())
        if (prev.get("seed"), prev.get("folds"), prev.get("repeats"), prev.get("epochs")) == (seed, folds, repeats, epochs):
            prev_folds = prev.get("fold_results", [])
    from harmonycell.tools.search.actions import parse_action

    wanted = {parse_action(a).text() for a in actions}
    # a fold is finished when every requested model ran in it; a model added later runs alone
    done.update({run["key"]: run for f in prev_folds for run in f["runs"]})
    finished = {(f["seed"], f["fold"]) for f in prev_folds
                if not f.get("partial") and wanted <= {run["action"] for run in f["runs"]}}
    t0 = time.time()
    # every model a fold ran is kept, also those not requested this time
    results = [f for f in prev_folds if (f["seed"], f["fold"]) in finished]
    kept = {(f["seed"], f["fold"]): f["runs"] for f in prev_folds if (f["seed"], f["fold"]) not in finished}
    with tempfile.TemporaryDirectory(prefix=f"models-doc-{task.key}-") as tmp:
        for r in range(repeats):
            for k in range(folds):
                if (seed + r, k) in finished:
                    continue
                fold = run_fold(task, actions, Path(tmp), seed + r, (k, folds), epochs, done)
                ran = {run["action"] for run in fold["runs"]}
                fold["runs"] += [run for run in kept.get((seed + r, k), []) if run["action"] not in ran]
                results.append(fold)
                if cache is not None:
                    atomic.write_json(cache, summary(task, seed, folds, repeats, epochs, results,
                                                     time.time() - t0, partial=True))
    return summary(task, seed, folds, repeats, epochs, results, time.time() - t0)


def summary(task: RealTask, seed: int, folds: int, repeats: int, epochs: int, results: list[dict],
            seconds: float, partial: bool = False) -> dict:
    return {
        "task": task.key, "title": task.title, "kind": task.kind, "seed": seed, "folds": folds,
        "repeats": repeats, "epochs": epochs, "fold_results": results,
        "seconds": round(sum(f["seconds"] for f in results), 1),  # all folds, also across resumes
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "threads": os.environ.get("HARMONYCELL_THREADS", "torch default"),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "partial": partial,
    }


def fmt(v, digits=3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def pooled(r: dict, action: str):
    """Cross-validation summary of one backbone: its folds against the same folds' baselines."""
    from harmonycell.tools.evaluation.crossval import FoldResult, summarise

    folds = []
    for f in r["fold_results"]:
        run = next((x for x in f["runs"] if x["action"] == action), None)
        if run is None:
            continue
        folds.append(FoldResult(repeat=f["seed"] - r["seed"], fold=f["fold"], valid=run["status"] == "ok",
                                model_rows=run["rows"], baseline_rows=f["baseline_rows"]))
    return summarise(folds, r["folds"], r["repeats"], METRICS)


def _ms(s) -> str:
    if s.mean is None:
        return "n/a"
    return f"{s.mean:.3f} ± {s.sd:.3f}" if s.sd is not None else f"{s.mean:.3f}"


def render(results: list[dict]) -> str:
    from harmonycell.tools.evaluation.compare import deciding_metric, usefulness
    from harmonycell.tools.evaluation.crossval import spread

    lines = [
        "# Model library on the real tasks",
        "",
        "Regenerate with `python bench/models_doc.py --folds K --repeats R --epochs E` (from the",
        "repository root; it reads `../shared/data/real/`). Protocol (SPEC section 7): nested K-fold",
        "cross-validation over the task's held-out units (genes, or cell contexts), repeated with",
        "seeds; in each fold the split comes first and genes are chosen on that fold's training",
        "cells. Each model in a table ran with its default refinements (epochs capped) as one node",
        "carried the way the search carries it (`agents/node_run.py`: sandbox, local backend, CPU) and",
        "is scored on the host beside the baselines of the same fold. A regeneration may run a subset",
        "of the action space (`--action`); the tables list exactly what ran.",
        f"`{SEARCH_METRIC}` decides: {DEFINITIONS[SEARCH_METRIC]}",
        f"Where it is undefined (every context holds one test query, as for a held-out cell type) "
        f"`{FALLBACK_METRIC}` decides: {DEFINITIONS[FALLBACK_METRIC]}",
        f"`{NOISE_CEILING}` is the positive control: a technical duplicate of the held-out cells.",
        "DeltaPCC (against the control mean) is inflated by the shared shift; it and RMSE never decide.",
        "Cells read `mean ± sd` over folds of the fold aggregates. Comparisons pool every test query",
        "over folds (each unit once, averaged over repeats), paired with each baseline: mean difference,",
        "an exact sign-flip test Holm-corrected over the baselines, and `better`/`worse` only where it rejects.",
        "Generative models are scored on their mean prediction.",
        "",
    ]
    verdicts = []
    for r in results:
        fr = r["fold_results"]
        if not fr:
            continue
        actions = list(dict.fromkeys(x["action"] for f in fr for x in f["runs"]))
        n_q = sum(f["test_queries"] for f in fr)
        lines += [f"## {r['title']}", "",
                  f"Task `{r['kind']}`, {r['folds']} folds x {r['repeats']} repeat(s) (seed {r['seed']}), "
                  f"epochs capped at {r['epochs']}: {fr[0]['cells']} cells, "
                  f"{min(f['genes'] for f in fr)}-{max(f['genes'] for f in fr)} genes per fold, "
                  f"{n_q} test queries over all folds. {r['machine']}, sandbox threads: {r['threads']}; "
                  f"{r['seconds']:.0f} s for this task; finished {r['finished']}.", ""]
        if r.get("partial"):
            lines += [f"**Partial: {len(fr)} of {r['folds'] * r['repeats']} folds finished when this table was rendered.**", ""]
        cv = {a: pooled(r, a) for a in actions}
        first = next(iter(cv.values()))
        head = "| predictor | status (ok folds) | " + " | ".join(METRICS) + " |"
        lines += [head, "|" + "---|" * (2 + len(METRICS))]
        shown = [b for b in BASELINES if b in first.spread]
        for name in shown:
            if name in first.spread:
                lines.append(f"| baseline: {name} | - | " + " | ".join(_ms(first.spread[name][m]) for m in METRICS) + " |")
        if all("ceiling" in f for f in fr):
            lines.append(f"| {NOISE_CEILING} (positive control) | - | "
                         + " | ".join(_ms(spread([f["ceiling"].get(m) for f in fr])) for m in METRICS) + " |")
        winners = []
        for a in actions:
            ok = sum(1 for f in fr for x in f["runs"] if x["action"] == a and x["status"] == "ok")
            lines.append(f"| {a} | {ok}/{len(fr)} | " + " | ".join(_ms(cv[a].spread["model"][m]) for m in METRICS) + " |")
        decides = deciding_metric(first.comparisons)
        lines += ["", f"Paired comparisons on `{decides}`, the metric that decides here (model - baseline, "
                  "each query once over folds and repeats):", "",
                  "| model | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
        for a in actions:
            useful, deciding = usefulness(cv[a].comparisons, decides)
            cells = []
            for b in shown:
                c = deciding.get(b)
                cells.append("-" if c is None else f"n/a **{c.conclusion}**" if c.mean_diff is None else
                             f"{c.mean_diff:+.3f} [{fmt(c.ci_low)}, {fmt(c.ci_high)}] n={c.n} **{c.conclusion}**")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
            if useful:
                winners.append(a)
        fb = [f["linear_fallbacks"] for f in fr if f.get("linear_fallbacks", {}).get("n")]
        if fb:
            lines += ["", f"Linear baseline: fell back to the train-mean shift on {sum(x['n'] for x in fb)} of "
                          f"{sum(x['of'] for x in fb)} queries ({fb[0]['why']})."]
        verdict = (f"Better than every baseline on {decides} (sign-flip test, Holm): {', '.join(winners)}."
                   if winners else
                   f"**No model is better than every baseline on {decides} on this task.**")
        lines += ["", verdict, ""]
        verdicts.append((r["title"], winners, len(actions), decides))
    lines += picks_section()
    missing = [t.title for k, t in TASKS.items() if k not in {r["task"] for r in results}]
    if missing:
        lines += ["Not in this table (no results cached: not run in the time this regeneration had): "
                  + "; ".join(missing) + ".", ""]
    lines += action_space_section()
    lines += ["## Summary", ""]
    for title, winners, n, decides in verdicts:
        lines.append(f"- {title}: {len(winners)} of {n} models are better than every baseline "
                     f"on {decides} (sign-flip test, Holm)"
                     + (f": {', '.join(winners)}." if winners else "."))
    lines += ["", "## GPU", "",
              "Not measured: the task that produced this table had no GPU machine. The harness records",
              "`peak_gpu_mem_bytes` and per-epoch seconds (`train_log.jsonl`) when it runs on CUDA;",
              "rerun this command on a GPU host to fill in epoch times and peak memory.", ""]
    return "\n".join(lines)


def picks_section(path: Path = RESULTS / "search_picks.json") -> list[str]:
    """HarmonyCell's own pick (a search in every fold) beside the baselines: bench/search_picks.py."""
    if not path.exists():
        return []
    picks = json.loads(path.read_text())
    lines = ["## HarmonyCell's pick", "",
             "What a user gets: `harmonycell run --folds K --budget B --no-kb` (`python bench/search_picks.py`),",
             "each fold's search choosing on validation only: the simplest candidate (closed-form, then a network",
             "on a simple model, then a network, then the ensemble of the best nodes) within one paired standard",
             "error of the best validation score; its test scores pooled over the folds beside the baselines and",
             "the noise ceiling (the cross-validation report's numbers). Results recorded before that rule say so.", ""]
    for key, r in picks.items():
        spread = r["spread"]
        metrics = list(next(iter(spread.values())))
        lines += [f"### {r['title']}", "",
                  f"{r['folds']} folds, budget {r['budget']} nodes or {r['time_limit']} per fold, {r['n_queries']} "
                  f"test queries; {r['seconds']:.0f} s (load {r['load_avg_1m_before']} before); {r['finished']}. "
                  "Picks: " + "; ".join(f"{x['fold']}: `{x['pick']}` of {x['nodes']}" for x in r["picks"]) + ".",
                  *ensemble_line(r["picks"]), *rule_line(r["picks"]), "",
                  "| predictor | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for name, row in spread.items():
            label = "HarmonyCell's pick" if name == "model" else name
            lines.append(f"| {label} | " + " | ".join(
                "n/a" if row[m]["mean"] is None else f"{row[m]['mean']:.3f} ± {row[m]['sd']:.3f}"
                if row[m]["sd"] is not None else f"{row[m]['mean']:.3f}" for m in metrics) + " |")
        lines += ["", f"**{r['verdict']}**", ""]
    return lines


def rule_line(picks: list[dict]) -> list[str]:
    """Each fold's best on validation beside its pick under the one-standard-error rule."""
    def one(x: dict) -> str:
        r = x["pick_rule"]
        if not r["applied"]:
            return f"{x['fold']}: not applied ({r['why']})"
        same = r["picked"] == r["best"]
        return (f"{x['fold']}: best `{r['best_label']}` {r['best_mean']:.3f}"
                + ("" if same else f", picked `{r['picked_label']}` {r['picked_mean']:.3f} (SE {r['se']:.3f})"))
    if not all(x.get("pick_rule") for x in picks):
        return ["These folds were run before the one-standard-error rule: each picked its best on validation."]
    return ["Best on validation, and the pick where the one-standard-error rule chose a simpler candidate: "
            + "; ".join(one(x) for x in picks) + "."]


def ensemble_line(picks: list[dict]) -> list[str]:
    """Each fold's ensemble of its best nodes: its cross-fitted validation score beside the best
    node's, or why there was none (results recorded before the ensemble was a candidate: nothing)."""
    def one(x: dict) -> str:
        e = x["ensemble"]
        if e.get("val_cross_fitted") is None:
            return f"{x['fold']}: none ({e.get('why_none')})"
        return (f"{x['fold']}: {e['val_cross_fitted']:.3f} vs best node {x['best_node_val']:.3f}, weights "
                f"{', '.join(f'{w:.2f}' for w in e['weights'])}")
    if not all("ensemble" in x for x in picks):
        return []
    return ["Ensemble of the best nodes (cross-fitted validation headline, a candidate under the same rule): "
            + "; ".join(one(x) for x in picks) + "."]


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
    ap.add_argument("--folds", type=int, default=3, help="outer folds K (every unit tested once per repeat)")
    ap.add_argument("--repeats", type=int, default=1, help="repeats of the K folds (seeds seed..seed+R-1)")
    ap.add_argument("--epochs", type=int, default=20, help="cap on epochs per training run")
    args = ap.parse_args(argv)
    os.environ.setdefault("HARMONYCELL_THREADS", "1")  # 2-core hosts: oversubscription costs 10x+
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.render:
        for key in args.task or list(TASKS):
            cache = RESULTS / f"models_{key}.json"
            res = run_task(TASKS[key], args.action or all_backbone_paths(), args.seed, cache=cache,
                           folds=args.folds, repeats=args.repeats, epochs=args.epochs)
            atomic.write_json(cache, res)
    results = [json.loads((RESULTS / f"models_{k}.json").read_text())
               for k in TASKS if (RESULTS / f"models_{k}.json").exists()]
    atomic.write_text(DOC, render(results))
    print(f"[models_doc] wrote {DOC} ({len(results)} task(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
