"""``harmonycell run --folds K [--repeats R]``: nested, repeated cross-validation.

Each outer fold is a complete run (its own folder, audit -> unify -> search -> test -> judge)
whose unification holds out that fold's units, so the search inside never sees them. The folds'
per-query test scores and baselines are pooled (``tools.evaluation.crossval``) into
``cv.json`` and ``report.md`` in the parent folder; the last line says both verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from harmonycell.tools.evaluation.ceiling import NOISE_CEILING
from harmonycell.tools.evaluation.compare import usefulness
from harmonycell.tools.evaluation.crossval import FoldResult, summarise
from harmonycell.tools.evaluation.metrics import SEARCH_METRIC
from harmonycell.tools.record import atomic
from harmonycell.tools.record.runfolder import RunFolder, create_run, new_run_id
from harmonycell.tools.report.markdown import comparisons_table, headline_text
from harmonycell.tools.tasks.registry import DEFAULT_KIND, task_kind


def fold_result(run: RunFolder, repeat: int, fold: int) -> FoldResult:
    verdict = json.loads((run.root / "verdict.json").read_text())
    base = json.loads((run.root / "baselines.json").read_text())
    rows: list[dict] = []
    for scores in sorted(run.nodes_dir.glob("*/test_scores.json")):
        rows = json.loads(scores.read_text())["per_perturbation"]  # only the selected node is tested
    return FoldResult(repeat=repeat, fold=fold, valid=bool(verdict["valid"]), model_rows=rows,
                      baseline_rows={k: [r for r in v] for k, v in base.get("per_query", {}).items()},
                      ceiling=base.get("baselines", {}).get(NOISE_CEILING) or {},
                      note=verdict.get("headline", ""))


def held_out_units(parent: Path, runs: list[str]) -> tuple[str, set[str]]:
    """(plural noun, the units held out over one repeat's folds) from the folds' split.json."""
    held: set[str] = set()
    kind = task_kind(DEFAULT_KIND)
    crispr_only = True
    for name in runs:
        split = json.loads((parent / name / "unify" / "split.json").read_text())
        kind = task_kind(split["task"])
        held |= set(kind.test_units(split))
        report = json.loads((parent / name / "unify" / "unify_report.json").read_text())
        crispr_only &= all(set(i.get("pert_type", {})) <= {"crispr"} for i in report.get("inputs", []))
    return kind.noun(crispr_only), held


def _cell(s) -> str:
    if s.mean is None:
        return "n/a"
    return f"{s.mean:.3f} ± {s.sd:.3f}" if s.sd is not None else f"{s.mean:.3f}"


def run_folds(files: list[Path], task: str, out: Path, folds: int, repeats: int, seed: int,
              drive: Callable[[RunFolder], None], **options) -> tuple[Path, str]:
    parent = Path(out) / f"cv-{new_run_id()}"
    results = []
    for r in range(repeats):
        for k in range(folds):
            run = create_run(parent, files, task, run_id=f"repeat{r}-fold{k}", seed=seed + r,
                             fold=[k, folds], **options)
            drive(run)
            results.append(fold_result(run, r, k))
    cv = summarise(results, folds, repeats)
    valid = all(f.valid for f in results) and all(f.model_rows for f in results)
    useful, deciding = usefulness(cv.comparisons)
    useful = useful and valid
    failed = [f"repeat {f.repeat} fold {f.fold}" for f in results if not f.valid or not f.model_rows]
    unit, held = held_out_units(parent, [f"repeat0-fold{k}" for k in range(folds)])
    split = json.loads((parent / "repeat0-fold0" / "unify" / "split.json").read_text())
    metric = next(iter(deciding.values())).metric if deciding else SEARCH_METRIC
    line = headline_text(valid=valid, useful=useful, failed=failed, deciding=deciding,
                         n_queries=cv.n_queries, unit=unit, n_units=len(held), metric=metric)
    line = line.replace("test queries", f"test queries pooled over {folds} folds x {repeats} repeat(s)")
    atomic.write_text(parent / "cv.json", cv.model_dump_json(indent=2))
    metrics = list(next(iter(cv.spread.values())).keys())
    lines = [f"# HarmonyCell cross-validation ({folds} folds x {repeats} repeat(s))", "", f"**{line}**", "",
             f"- task: **{task}**; split rule: {split.get('rule', '')}",
             "- each fold is a complete run (subfolders); the search inside a fold never saw its test units",
             "", "## Across folds (mean ± sd of fold aggregates)", "",
             "| predictor | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for p, row in cv.spread.items():
        lines.append(f"| {p} | " + " | ".join(_cell(row[m]) for m in metrics) + " |")
    lines += ["", "## Paired comparisons, pooled over folds (per query, averaged over repeats)", "",
              comparisons_table([c.model_dump() for c in cv.comparisons]), "",
              "## Folds", "", *[f"- repeat {f.repeat} fold {f.fold}: {f.note}" for f in results], ""]
    atomic.write_text(parent / "report.md", "\n".join(lines))
    return parent, line
