"""report.md: what was asked, what was tried, and the result beside the baselines."""

from __future__ import annotations

from typing import Mapping, Sequence

from harmonycell.tools.search.tree import ROOT, Tree

HEADLINE = ("Discrimination_score", "DeltaPCC", "PCC_Delta_shift_corrected", "Cosine_delta", "RMSE")


def _f(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def headline_text(*, valid: bool, useful: bool, failed: list[str], deciding: Mapping, n_queries: int,
                  unit: str, n_units: int, metric: str, notes: Sequence[str] = ()) -> str:
    """Both verdicts in one line, e.g. ``VALID, NOT BETTER THAN BASELINES on M (train_mean:
    indistinguishable; n=5 queries, 5 held-out genes)``. ``deciding``: baseline -> comparison
    (with ``conclusion``) on ``metric``; ``notes``: what the data could decide
    (``tools.evaluation.verdict.decidability``)."""
    v = "VALID" if valid else f"INVALID ({', '.join(failed) or 'integrity check failed'})"
    where = f"n={n_queries} test queries, {n_units} held-out {unit}" + "".join(f"; {n}" for n in notes)
    if not deciding:
        return f"{v}, NOT BETTER THAN BASELINES (no model to compare; {where})"
    parts = ", ".join(f"{b}: {c.conclusion}" for b, c in sorted(deciding.items()))
    all_better = all(c.conclusion == "better" for c in deciding.values())
    if useful:
        u = "BETTER THAN EVERY BASELINE"
    elif all_better:  # an invalid run is never presented as a success
        u = "NOT USEFUL (an invalid result cannot be)"
    else:
        u = "NOT BETTER THAN BASELINES"
    return f"{v}, {u} on {metric} ({parts}; {where})"


def baseline_label(name: str, fallbacks: Mapping[str, dict]) -> str:
    fb = fallbacks.get(name) or {}
    if fb.get("of") and fb.get("n") == fb.get("of"):
        return f"{name} (= {fb.get('to', 'train_mean')}: fell back on every query)"
    return name


def metrics_table(model_name: str | None, model: dict, baselines: dict[str, dict],
                  fallbacks: Mapping[str, dict] | None = None) -> str:
    fallbacks = fallbacks or {}
    keys = [k for k in HEADLINE if k in model or any(k in b for b in baselines.values())]
    rows = [f"| predictor | {' | '.join(keys)} |", "|---" * (len(keys) + 1) + "|"]
    if model_name:
        rows.append(f"| **model ({model_name})** | " + " | ".join(_f(model.get(k)) for k in keys) + " |")
    for name, vals in baselines.items():
        rows.append(f"| baseline: {baseline_label(name, fallbacks)} | " + " | ".join(_f(vals.get(k)) for k in keys) + " |")
    return "\n".join(rows)


def comparisons_table(comparisons: list[dict]) -> str:
    """Model minus baseline, paired per query, 95% bootstrap interval, conclusion."""
    rows = ["| baseline | metric | n | model - baseline | 95% CI | conclusion |", "|---|---|---|---|---|---|"]
    for c in comparisons:
        ci = "n < 3: none" if c["ci_low"] is None else f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
        rows.append(f"| {c['baseline']} | {c['metric']} | {c['n']} | {c['mean_diff']:+.3f} | {ci} | "
                    f"**{c['conclusion']}** |")
    return "\n".join(rows)


def fallback_lines(fallbacks: Mapping[str, dict]) -> list[str]:
    out = []
    for name, fb in fallbacks.items():
        if not fb.get("n"):
            continue
        out.append(f"- `{name}` fell back to `{fb.get('to', 'train_mean')}` on {fb['n']} of {fb['of']} queries:")
        for q in fb.get("queries", [])[:20]:
            out.append(f"  - {q['condition']} in {q['context']}: {q['why']}")
        if len(fb.get("queries", [])) > 20:
            out.append(f"  - ... and {len(fb['queries']) - 20} more (baselines.json)")
    return out


def nodes_table(tree: Tree) -> str:
    from harmonycell.tools.evaluation.metrics import SEARCH_METRIC

    rows = [f"| node | action | status | val {SEARCH_METRIC} | reward | CPU s | wall s |", "|---|---|---|---|---|---|---|"]
    for n in tree.nodes.values():
        if n.id == ROOT:
            continue
        rows.append(f"| {n.id} | `{n.action}` | {n.status} | {_f(n.val_metric)} | {_f(n.reward)} | {_f(n.cpu_s)} | {_f(n.wall_s)} |")
    return "\n".join(rows)


def protocol_lines(split_info: Mapping, gene_selection: Mapping) -> list[str]:
    out = []
    if split_info.get("rule"):
        out.append(f"- split: {split_info['rule']} (seed {split_info.get('seed')}"
                   + (f", fold {split_info['fold'] + 1} of {split_info['folds']}" if "folds" in split_info else "")
                   + "); units in `unify/split.json`")
    if gene_selection.get("rule"):
        out.append(f"- genes: {gene_selection['rule']}: {gene_selection.get('n_genes')} genes of "
                   f"{gene_selection.get('n_measured')} measured; list in `unify/genes.json`")
    out.append("- deltas are taken against the mean of all control cells of the query's context "
               "(controls are inputs the model sees, not targets)")
    never = split_info.get("test_conditions_never_trained") or []
    if never:
        out.append(f"- note: {len(never)} test perturbation(s) were never trained in any context: "
                   f"{', '.join(map(str, never[:10]))}")
    return out


def render_report(*, run_id: str, task: str, inputs: list[str], unify_line: str, tree: Tree,
                  best: str | None, best_action: str | None, test_metrics: dict,
                  baselines: dict[str, dict], checks: list[dict], valid: bool, headline: str = "",
                  unit: str = "perturbations", comparisons: list[dict] | None = None,
                  fallbacks: Mapping[str, dict] | None = None, split_info: Mapping | None = None,
                  gene_selection: Mapping | None = None) -> str:
    fallbacks = fallbacks or {}
    lines = [
        f"# HarmonyCell run {run_id}",
        "",
        f"**{headline or ('VALID' if valid else 'INVALID')}**",
        "",
        f"- task: **{task}**",
        f"- inputs: {', '.join(inputs)}",
        f"- data: {unify_line}",
        *protocol_lines(split_info or {}, gene_selection or {}),
        "",
        f"## Test split (held-out {unit}), scored on the host",
        "",
        metrics_table(f"{best}: {best_action}" if best else None, test_metrics, baselines, fallbacks),
        "",
        "The shift-corrected PearsonΔ (deltas against the mean of perturbed training cells) is the "
        "metric the search optimised and the verdict decides on. DeltaPCC against the control mean "
        "is inflated by the shift all perturbations share; read it beside the train-mean baseline.",
        "",
    ]
    if comparisons:
        lines += ["## Paired comparisons (model minus baseline, per test query)", "",
                  comparisons_table(comparisons), "",
                  "95% percentile bootstrap interval of the mean paired difference (seeded); "
                  "`better`/`worse` only when the interval excludes 0, read in the metric's own "
                  "direction (RMSE: lower is better). An undefined correlation counts as 0.", ""]
    fb = fallback_lines(fallbacks)
    if fb:
        lines += ["## Baseline fallbacks", "", *fb, ""]
    lines += [
        "## Search",
        "",
        tree.summary(),
        "",
        *([tree.pick_sentence(best), ""] if tree.pick_sentence(best) else []),
        *([f"Ensemble of the best nodes (weights fitted on validation only): {tree.ensemble_line()}.", ""]
          if tree.ensemble or tree.ensemble_note else []),
        nodes_table(tree),
        "",
        "## Judge",
        "",
        *[f"- [{'x' if c['passed'] else ' '}] **{c['name']}**: {c['detail']}" for c in checks],
        "",
    ]
    return "\n".join(lines)
