"""One human line per message: what the terminal shows and what answers quote from the record."""

from __future__ import annotations

from harmonycell.agents.unifier import held_units
from harmonycell.tools.evaluation.metrics import headline_of


def fmt_value(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("n/a" if v is None else str(v))


def summary(type_: str, c: dict) -> str:
    """One human line for a message's content."""
    if type_ == "RunRequest":
        return f"task {c['task']} on {len(c['inputs'])} input(s), seed {c['seed']}"
    if type_ == "AuditDone":
        return "; ".join(c["summaries"])
    if type_ == "UnifyDone":
        if c.get("held_out"):
            held = "; ".join(f"{split} holds out {held_units(units)}" for split, units in c["held_out"].items())
        else:
            held = "perturbations: " + ", ".join(f"{k} {v}" for k, v in c["n_conditions"].items())
        return f"{c['n_cells']} cells x {c['n_genes']} genes; {held}; {c['dropped_cells']} cells dropped"
    if type_ == "RunIntent":
        return f"\"{c.get('said', '')}\" -> {c.get('understood', '')}"
    if type_ == "Steer":
        return f"\"{c['said']}\" -> {steer_text(c)}"
    if type_ == "Approval":
        if not c["approved"]:
            return f"stop: {c['note']}"
        return f"go on with {c['budget_nodes']} node(s)" + (f"; {c['note']}" if c.get("note") else "")
    if type_ == "Question":
        cites = f" [{', '.join(c['sources'])}]" if c.get("sources") else ""
        return f"Q: {c['said']}\n       A ({c.get('by', 'builtin')}): {c['answer']}{cites}"
    if type_ == "NodePlan":
        return f"{c['node_id']}: {c['action']} ({c['reason']})"
    if type_ == "NodeExecuted":
        return f"{c['node_id']} trained in {c['wall_s']:.1f}s on {c['backend']} (attempt {c['attempts']})"
    if type_ == "NodeFailed":
        last = (c["error_tail"].strip().splitlines() or [""])[-1]
        return f"{c['node_id']} {c['status']}: {last}"
    if type_ == "NodeAbandoned":
        return f"{c['node_id']} abandoned after {c['attempts']} attempt(s): {c['reason']}"
    if type_ == "NodeScored":
        m = c["metrics"]
        metric, value = headline_of(m)
        return (f"{c['node_id']} val {metric} {fmt_value(value)}, DeltaPCC "
                f"{fmt_value(m.get('DeltaPCC'))}, RMSE {fmt_value(m.get('RMSE'))}, reward {c['reward']:.3f}")
    if type_ in ("SearchDone", "SearchReviewed"):
        return (f"best {c['best_node']} of {c['n_nodes']} node(s): {c['reason']}"
                + (f"; {c['ensemble']}" if c.get("ensemble") else ""))
    if type_ == "TestScored":
        m = c["metrics"]
        tm = c["baselines"].get("train_mean", {})
        metric, value = headline_of(m)
        return (f"{c['node_id']} test {metric} {fmt_value(value)} "
                f"(train-mean {fmt_value(tm.get(metric))}), DeltaPCC {fmt_value(m.get('DeltaPCC'))} "
                f"(train-mean {fmt_value(tm.get('DeltaPCC'))}), RMSE {fmt_value(m.get('RMSE'))}")
    if type_ == "Verdict":
        if c.get("headline"):
            return c["headline"]
        failed = [ch["name"] for ch in c["checks"] if not ch["passed"]]
        return "VALID" if c["valid"] else f"INVALID ({', '.join(failed)})"
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in list(c.items())[:4]) if isinstance(c, dict) else str(c)


def steer_text(c: dict) -> str:
    parts = []
    if c.get("exclude"):
        parts.append("exclude " + ", ".join(c["exclude"]))
    if c.get("time_limit_s"):
        parts.append(f"time budget {c['time_limit_s'] / 60:g} min")
    if c.get("add_nodes"):
        parts.append(f"{c['add_nodes']:+d} node(s)")
    if c.get("hold_out"):
        parts.append("hold out " + ", ".join(c["hold_out"]))
    if c.get("drop_inputs"):
        parts.append("drop " + ", ".join(c["drop_inputs"]))
    return "; ".join(parts) or "no change"
