"""report.md: what was asked, what was tried, and the result beside the baselines."""

from __future__ import annotations

from harmonycell.tools.search.tree import ROOT, Tree

HEADLINE = ("DeltaPCC", "PCC_Delta_shift_corrected", "CosLogFC", "RMSE", "Rank")


def _f(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def metrics_table(model_name: str | None, model: dict, baselines: dict[str, dict]) -> str:
    keys = [k for k in HEADLINE if k in model or any(k in b for b in baselines.values())]
    rows = [f"| predictor | {' | '.join(keys)} |", "|---" * (len(keys) + 1) + "|"]
    if model_name:
        rows.append(f"| **model ({model_name})** | " + " | ".join(_f(model.get(k)) for k in keys) + " |")
    for name, vals in baselines.items():
        rows.append(f"| baseline: {name} | " + " | ".join(_f(vals.get(k)) for k in keys) + " |")
    return "\n".join(rows)


def nodes_table(tree: Tree) -> str:
    from harmonycell.tools.evaluation.metrics import SEARCH_METRIC

    rows = [f"| node | action | status | val {SEARCH_METRIC} | reward | CPU s | wall s |", "|---|---|---|---|---|---|---|"]
    for n in tree.nodes.values():
        if n.id == ROOT:
            continue
        rows.append(f"| {n.id} | `{n.action}` | {n.status} | {_f(n.val_metric)} | {_f(n.reward)} | {_f(n.cpu_s)} | {_f(n.wall_s)} |")
    return "\n".join(rows)


def render_report(*, run_id: str, task: str, inputs: list[str], unify_line: str, tree: Tree,
                  best: str | None, best_action: str | None, test_metrics: dict,
                  baselines: dict[str, dict], checks: list[dict], valid: bool) -> str:
    lines = [
        f"# HarmonyCell run {run_id}",
        "",
        f"- task: **{task}**",
        f"- inputs: {', '.join(inputs)}",
        f"- data: {unify_line}",
        f"- verdict: **{'VALID' if valid else 'INVALID'}**",
        "",
        "## Test split (held-out perturbations), scored on the host",
        "",
        metrics_table(f"{best}: {best_action}" if best else None, test_metrics, baselines),
        "",
        "DeltaPCC against the control mean is inflated by the shift all perturbations share; "
        "read it beside the train-mean baseline and the shift-corrected column.",
        "",
        "## Search",
        "",
        tree.summary(),
        "",
        nodes_table(tree),
        "",
        "## Judge",
        "",
        *[f"- [{'x' if c['passed'] else ' '}] **{c['name']}**: {c['detail']}" for c in checks],
        "",
    ]
    return "\n".join(lines)
