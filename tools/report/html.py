"""report.html: one self-contained, offline page per run (and one comparing runs).

Pure: ``RunData`` in, an HTML string out. Every figure is Plotly's, with plotly.js inlined once;
a Content-Security-Policy forbids the page any request, so nothing leaves it even by accident.
The only hand-written script shows the detail of the node a reader selects in the tree.
"""

from __future__ import annotations

import html
import json
from typing import Any, Iterable

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from harmonycell.tools.report.markdown import HEADLINE
from harmonycell.tools.report.rundata import RunData, usage_tokens
from harmonycell.tools.search.tree import ROOT

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "img-src data:; font-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'")
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["toImage"]}
NODE_KEYS = ("node_id", "node")  # where a record names the node it is about
KB_WORDS = ("kb", "knowledge", "retriev")  # record types that come from the knowledge base
MISSING = "#9aa0a6"
FAILED = "#d93025"


# ---------------------------------------------------------------- small helpers

def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if v == 0 or abs(v) >= 10 ** -digits else f"{v:.2g}"
    return str(v)


def _fig(fig: go.Figure, div_id: str, height: int | None = None) -> str:
    fig.update_layout(template="plotly_white", margin=dict(l=60, r=20, t=40, b=50),
                      font=dict(family="system-ui, sans-serif", size=12), **({"height": height} if height else {}))
    # figure ids live apart from section ids: Plotly draws into whatever element has its id
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"{div_id}", config=PLOT_CONFIG)
    # the figure fills its box; a box of fixed height keeps responsive resizing from stretching it
    return f'<div class="plot" style="height:{height or 450}px">{div}</div>'


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """A table from already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    return f'<table class="{cls}">{thead}<tbody>{body}</tbody></table>'


def _value(v: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: dicts as key/value tables, lists of dicts as tables."""
    if isinstance(v, dict):
        if not v:
            return '<span class="muted">(empty)</span>'
        return _table(["", ""], ([f"<code>{_e(k)}</code>", _value(x, depth + 1)] for k, x in v.items()), "kv")
    if isinstance(v, list):
        if v and all(isinstance(x, dict) for x in v) and depth < 3:
            keys = list(dict.fromkeys(k for x in v for k in x))
            return _table([_e(k) for k in keys], ([_value(x.get(k), depth + 1) for k in keys] for x in v))
        return ", ".join(_value(x, depth + 1) for x in v) or '<span class="muted">(none)</span>'
    if isinstance(v, str) and ("\n" in v or len(v) > 160):
        return f"<pre>{_e(v)}</pre>"
    return _e(_f(v))


def _facts(pairs: Iterable[tuple[str, Any]]) -> str:
    """Small labelled numbers in a row."""
    return '<div class="facts">' + "".join(f'<div class="fact"><span>{_e(k)}</span><b>{_e(_f(v))}</b></div>'
                                           for k, v in pairs if v is not None) + "</div>"


def _badge(text: str, good: bool | None) -> str:
    cls = "neutral" if good is None else ("good" if good else "bad")
    return f'<span class="badge {cls}">{_e(text)}</span>'


def _section(sid: str, title: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{sid}" class="card"><h2>{_e(title)}</h2>{lead_html}{body}</section>'


def _summary(content: Any) -> str:
    """One line for a transcript record's content."""
    if not isinstance(content, dict):
        return _f(content)
    parts = []
    for k, v in content.items():
        if isinstance(v, (dict, list)):
            continue
        parts.append(f"{k}={_f(v)}")
    return ", ".join(parts)[:200]


# ---------------------------------------------------------------- the search tree

def tree_layout(nodes: dict[str, dict]) -> dict[str, tuple[float, int]]:
    """(x, depth) per node: leaves side by side in visiting order, a parent above the middle of
    its children, so the drawing reads as a tree, top down."""
    pos: dict[str, tuple[float, int]] = {}
    next_x = [0.0]

    def place(nid: str, depth: int) -> float:
        kids = [c for c in nodes[nid].get("children", []) if c in nodes]
        if not kids:
            x = next_x[0]
            next_x[0] += 1
        else:
            xs = [place(c, depth + 1) for c in kids]
            x = (min(xs) + max(xs)) / 2
        pos[nid] = (x, depth)
        return x

    roots = [n for n, d in nodes.items() if d.get("parent") not in nodes]
    for r in roots:
        place(r, 0)
    return pos


def node_kind(node: dict) -> str:
    """ok (coloured by reward), failed, root, or the status the search left it in (planned, pruned...)."""
    if node.get("id") == ROOT:
        return "root"
    if node.get("status") == "ok" and node.get("reward") is not None:
        return "ok"
    return "failed" if node.get("status") == "failed" else str(node.get("status") or "planned")


def tree_figure(data: RunData, clickable: bool = True) -> go.Figure:
    fig = go.Figure()
    add_tree_traces(fig, data)
    fig.update_layout(showlegend=True, legend=dict(orientation="h", y=-0.08), clickmode="event" if clickable else "none",
                      hovermode="closest", dragmode=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    return fig


def reward_range(runs: list[RunData]) -> tuple[float, float]:
    """The colour range of rewards: the range seen (spread out when all are equal)."""
    rewards = [n["reward"] for r in runs for n in r.tree.get("nodes", {}).values() if node_kind(n) == "ok"]
    lo, hi = (min(rewards), max(rewards)) if rewards else (0.0, 1.0)
    return (lo, hi) if hi - lo > 1e-9 else (lo - 0.05, hi + 0.05)


def add_tree_traces(fig: go.Figure, data: RunData, row: int | None = None, col: int | None = None,
                    colorbar: bool = True, crange: tuple[float, float] | None = None,
                    legend_seen: set | None = None) -> None:
    nodes = data.tree.get("nodes", {})
    pos = tree_layout(nodes)
    where = {"row": row, "col": col} if row else {}
    ex, ey = [], []
    for nid, n in nodes.items():
        if n.get("parent") in pos and nid in pos:
            (x0, y0), (x1, y1) = pos[n["parent"]], pos[nid]
            ex += [x0, x1, None]
            ey += [y0, y1, None]
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="#c4c7c5", width=2),
                             hoverinfo="skip", showlegend=False), **where)
    selected = set(data.selected)  # the node, or the ensemble's members
    groups: dict[str, list[str]] = {}
    for nid in nodes:
        if nid in pos:
            groups.setdefault(node_kind(nodes[nid]), []).append(nid)
    for kind, ids in groups.items():
        xs, ys = [pos[i][0] for i in ids], [pos[i][1] for i in ids]
        text = [(nodes[i].get("action") or "root").split("/")[-1] if i != ROOT else "root" for i in ids]
        hover = [_node_hover(nodes[i], i in selected) for i in ids]
        line = dict(width=[4 if i in selected else 1 for i in ids], color=["#111" if i in selected else "#555" for i in ids])
        if kind == "ok":
            lo, hi = crange or reward_range([data])
            marker = dict(size=22, color=[nodes[i]["reward"] for i in ids], colorscale="Viridis", cmin=lo, cmax=hi,
                          line=line, showscale=colorbar,
                          colorbar=dict(title="reward", thickness=12, len=0.8) if colorbar else None)
            name = "trained (colour: validation reward)"
        elif kind == "failed":
            marker = dict(size=20, color=FAILED, symbol="x", line=line)
            name = "failed"
        elif kind == "root":
            marker = dict(size=16, color="#5f6368", symbol="diamond", line=line)
            name = "root"
        else:
            marker = dict(size=18, color=MISSING, symbol="circle-open", line=dict(width=2))
            name = f"{kind} (not trained)"
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", text=text, textposition="bottom center",
                                 textfont=dict(size=10), marker=marker, customdata=ids, hovertext=hover,
                                 hoverinfo="text", name=name, legendgroup=kind,
                                 showlegend=legend_seen is None or kind not in legend_seen),
                      **where)
        if legend_seen is not None:
            legend_seen.add(kind)


def _node_hover(n: dict, best: bool) -> str:
    lines = [f"<b>{_e(n.get('id'))}</b>{' (selected)' if best else ''}", _e(n.get("action") or "(root)"),
             f"status: {_e(n.get('status'))}"]
    for key, label in (("val_metric", "val metric"), ("reward", "reward"), ("wall_s", "wall s"), ("visits", "visits")):
        if n.get(key) is not None:
            lines.append(f"{label}: {_e(_f(n[key]))}")
    return "<br>".join(lines)


def node_records(data: RunData) -> dict[str, list[dict]]:
    """Transcript records per node: those that name it, and the Debugger's and Coder's records in
    between (a thought or a refinement step belongs to the node that failed before it)."""
    out: dict[str, list[dict]] = {}
    current: str | None = None
    for rec in data.transcript:
        c = rec.get("content")
        named = next((c[k] for k in NODE_KEYS if isinstance(c, dict) and isinstance(c.get(k), str)), None)
        if named:
            current = named
        elif not (current and (rec.get("source") in ("Debugger", "Coder") or rec.get("type") == "refinement_trace")):
            continue
        out.setdefault(named or current, []).append(rec)
    return out


def _routing(data: RunData) -> dict[int, str]:
    """seq of each message -> the agent that spoke next (who the routing table handed it to)."""
    msgs = [r for r in data.transcript if r.get("kind") == "message"]
    return {a["seq"]: b.get("source", "") for a, b in zip(msgs, msgs[1:])}


def node_detail(data: RunData, nid: str, recs: list[dict], routed: dict[int, str]) -> str:
    n = data.tree.get("nodes", {}).get(nid, {})
    files = data.nodes.get(nid)
    steps = " &rarr; ".join(f'<span class="step">{_e(s)}</span>' for s in (n.get("action") or "").split("/") if s)
    facts = [("status", n.get("status")), ("validation metric", n.get("val_metric")), ("reward", n.get("reward")),
             ("wall s", n.get("wall_s")), ("visits", n.get("visits"))]
    executed = [r["content"] for r in recs if r.get("type") == "NodeExecuted" and isinstance(r.get("content"), dict)]
    if executed:
        last = executed[-1]
        facts += [(k, last.get(k)) for k in ("backend", "isolation", "attempts") if last.get(k) is not None]
    best = ' <span class="badge good">selected for test</span>' if nid in data.selected else ""
    parts = [f'<h3>{_e(nid)}{best}</h3><p class="path">{steps or "(root)"}</p>',
             _facts(facts)]
    if files and files.train_log:
        fig = go.Figure()
        epochs = [r.get("epoch") for r in files.train_log]
        for key in ("train_loss", "stop_loss"):
            if any(key in r for r in files.train_log):
                fig.add_trace(go.Scatter(x=epochs, y=[r.get(key) for r in files.train_log], mode="lines+markers",
                                         name={"stop_loss": "held-out training perturbations"}.get(key, key)))
        fig.update_layout(title="training curve", xaxis_title="epoch", yaxis_title="loss")
        parts.append(_fig(fig, f"curve-{nid}", height=280))
    routing = [r for r in recs if r.get("kind") == "message"]
    if routing:
        parts.append("<h4>Routing decisions</h4>" + _table(
            ["#", "from", "message", "to", "what"],
            ([_e(r["seq"]), _e(r.get("source")), f"<b>{_e(r.get('type'))}</b>", _e(routed.get(r["seq"], "(end)")),
              _e(_summary(r.get("content")))] for r in routing)))
    debug = [r for r in recs if r.get("source") == "Debugger" and r.get("kind") != "message"]
    if debug:
        parts.append("<h4>Debugger steps</h4>" + "".join(
            f'<div class="react"><span class="muted">#{_e(r["seq"])} {_e(r.get("type"))}</span>{_value(r.get("content"))}</div>'
            for r in debug))
    refine = [r for r in recs if r.get("type") == "refinement_trace"]
    if refine:
        parts.append("<h4>Refinement</h4>" + "".join(_value(r.get("content")) for r in refine))
    llm = [r for r in recs if r.get("kind") == "llm_call"]
    if llm:
        parts.append("<h4>LLM calls</h4>" + _llm_table(llm))
    if files and files.config is not None:
        parts.append(f"<h4>Config</h4><pre class=\"config\">{_e(json.dumps(files.config, indent=2))}</pre>")
    if files and files.code:
        parts.append(f'<h4>Code <span class="muted">model.py</span></h4><pre class="code">{_e(files.code)}</pre>')
    if files:
        for name, text in files.logs.items():
            parts.append(f"<details><summary>{_e(name)} ({len(text)} chars, tail)</summary><pre>{_e(text)}</pre></details>")
    return f'<div class="node-detail" data-node="{_e(nid)}" hidden>{"".join(parts)}</div>'


def search_section(data: RunData) -> str:
    nodes = data.tree.get("nodes", {})
    if not nodes:
        return _section("search", "Search tree", '<p class="muted">no tree.json in this run</p>')
    recs = node_records(data)
    routed = _routing(data)
    ids = [i for i in nodes if i != ROOT]
    options = "".join(f'<option value="{_e(i)}">{_e(i)}: {_e(nodes[i].get("action"))} ({_e(nodes[i].get("status"))})</option>'
                      for i in ids)
    start = next((i for i in data.selected if i in nodes), ids[0] if ids else "")
    details = "".join(node_detail(data, i, recs.get(i, []), routed) for i in ids)
    depth = max((p[1] for p in tree_layout(nodes).values()), default=0)
    tree = data.search_tree()
    pick = "".join(f"<p>{_e(line)}</p>" for line in (
        [tree.pick_sentence(data.best_node), f"Ensemble: {tree.ensemble_line()}"
         if tree.ensemble or tree.ensemble_note else ""] if tree else []) if line)
    body = (pick + f'<div class="tree-wrap">{_fig(tree_figure(data), "tree", height=max(320, 120 * (depth + 1)))}</div>'
            f'<label class="pick">node <select id="node-select" data-start="{_e(start)}">{options}</select></label>'
            f'<div id="node-panel">{details}</div>')
    return _section("search", "Search tree", body,
                    "Click a node (or pick it below) for its action path, code, config, training curve, logs, "
                    "Debugger steps and routing. Colour: validation reward; &times;: failed; open circle: never trained; "
                    "thick outline: the node selected for the test split (each member, where the pick is the ensemble).")


# ---------------------------------------------------------------- verdicts and comparisons

def verdict_section(data: RunData) -> str:
    v = data.verdict
    if v is None:
        state = (data.status or {}).get("state", "unknown")
        err = (data.status or {}).get("error")
        return _section("verdict", "Verdict", f"<p>No verdict: the run is <b>{_e(state)}</b>"
                        + (f": {_e(err)}" if err else "") + ".</p>")
    badges = [_badge("VALID" if v.get("valid") else "INVALID", bool(v.get("valid")))]
    if "useful" in v:
        badges.append(_badge("USEFUL" if v["useful"] else "NOT USEFUL", bool(v["useful"])))
    head = f'<div class="badges">{"".join(badges)}</div>'
    if v.get("headline"):
        head += f'<p class="headline">{_e(v["headline"])}</p>'
    if v.get("backend"):
        iso = v.get("isolated")
        head += (f'<p>Sandbox of the selected node: <b>{_e(v["backend"])}</b> '
                 + (_badge("isolated", True) if iso else _badge("UNISOLATED", False) if iso is False else "") + "</p>")
    checks = v.get("checks") or []
    rows = ([_badge("pass" if c.get("passed") else "fail", bool(c.get("passed"))), f"<b>{_e(c.get('name'))}</b>",
             _e(c.get("detail"))] for c in checks)
    body = head + _table(["", "check", "detail"], rows, "checks")
    comps = [c for c in v.get("comparisons") or [] if isinstance(c, dict)]
    if comps:
        body += "<h3>Comparisons with baselines</h3>" + comparisons_html(comps, "fig-comparisons")
    return _section("verdict", "Verdict", body)


def comparisons_html(comps: list[dict], div_id: str, label: str = "") -> str:
    rows = ([_e(c.get("baseline")), _e(c.get("metric")), _e(c.get("n")), _e(_f(c.get("mean_diff"))),
             f"[{_e(_f(c.get('ci_low')))}, {_e(_f(c.get('ci_high')))}]", _e(c.get("conclusion"))] for c in comps)
    table = _table(["baseline", "metric", "n", "mean difference", "95% interval", "conclusion"], rows)
    return table + _fig(comparison_figure(comps, label), div_id, height=max(220, 40 * len(comps) + 120))


def comparison_figure(comps: list[dict], label: str = "") -> go.Figure:
    """Forest plot: each difference with its interval; an interval crossing 0 is no win."""
    ys = [f"{label}{c.get('metric')} vs {c.get('baseline')}" for c in comps]
    mids = [c.get("mean_diff") for c in comps]
    plus = [None if c.get("ci_high") is None or m is None else c["ci_high"] - m for c, m in zip(comps, mids)]
    minus = [None if c.get("ci_low") is None or m is None else m - c["ci_low"] for c, m in zip(comps, mids)]
    # blue: the interval excludes 0 (a difference, whichever way is better for that metric); grey: it does not
    colors = ["#1a73e8" if (c.get("ci_low") or 0) > 0 or (c.get("ci_high") or 0) < 0 else MISSING for c in comps]
    fig = go.Figure(go.Scatter(x=mids, y=ys, mode="markers", marker=dict(size=11, color=colors),
                               error_x=dict(type="data", symmetric=False, array=plus, arrayminus=minus, thickness=2),
                               hovertext=[_e(c.get("conclusion")) for c in comps], hoverinfo="x+y+text", showlegend=False))
    fig.add_vline(x=0, line=dict(color="#555", dash="dot"))
    fig.update_layout(title="model minus baseline, with its interval (one crossing 0 is no difference)",
                      xaxis_title="difference")
    fig.update_yaxes(autorange="reversed")
    return fig


def test_metrics(data: RunData) -> tuple[dict, dict]:
    test = data.last_content("TestScored") or {}
    return test.get("metrics") or {}, test.get("baselines") or {}


def metrics_section(data: RunData) -> str:
    model, baselines = test_metrics(data)
    if not model and not baselines:
        return ""
    keys = [k for k in HEADLINE if k in model or any(k in b for b in baselines.values())]
    rows = [[f"<b>model ({_e(data.best_node)}: {_e(data.selected_path)})</b>"] + [_e(_f(model.get(k))) for k in keys]]
    rows += [[f"baseline: {_e(n)}"] + [_e(_f(b.get(k))) for k in keys] for n, b in baselines.items()]
    fig = go.Figure()
    for name, vals in [("model", model), *baselines.items()]:
        fig.add_trace(go.Bar(name=name, x=keys, y=[vals.get(k) for k in keys]))
    fig.update_layout(barmode="group", title="test split: model beside the baselines")
    body = _table(["predictor", *map(_e, keys)], rows) + _fig(fig, "fig-metrics", height=340)
    return _section("metrics", "Test split", body,
                    "Held-out queries scored on the host. DeltaPCC against the control mean is inflated by the "
                    "shift all perturbations share: read it beside the train-mean baseline and the shift-corrected column.")


def per_query_section(data: RunData) -> str:
    rows = (data.test_scores or {}).get("per_perturbation") or []
    if not rows:
        return ""
    metrics = [m for m in HEADLINE if any((r.get("metrics") or {}).get(m) is not None for r in rows)]
    labels = [f"{r.get('condition')} ({str(r.get('context', '')).split('|')[-1]})" for r in rows]
    fig = go.Figure()
    for i, m in enumerate(metrics):
        vals = [(r.get("metrics") or {}).get(m) for r in rows]
        order = sorted(range(len(rows)), key=lambda j: (vals[j] is None, vals[j] if vals[j] is not None else 0))
        fig.add_trace(go.Bar(x=[vals[j] for j in order], y=[labels[j] for j in order], orientation="h",
                             name=m, visible=i == 0, marker_color="#1a73e8"))
    buttons = [dict(label=m, method="update", args=[{"visible": [j == i for j in range(len(metrics))]},
                                                   {"xaxis.title.text": m}]) for i, m in enumerate(metrics)]
    fig.update_layout(updatemenus=[dict(buttons=buttons, direction="right", type="buttons", x=0, y=1.12,
                                        xanchor="left", showactive=True)] if len(metrics) > 1 else [],
                      xaxis_title=metrics[0] if metrics else "", showlegend=False)
    return _section("queries", "Per held-out query", _fig(fig, "fig-per-query", height=max(300, 24 * len(rows) + 120)),
                    f"The selected node on each of the {len(rows)} held-out queries of the test split.")


# ---------------------------------------------------------------- data, knowledge, LLM, transcript

def mapping_section(data: RunData) -> str:
    report = data.unify_report or {}
    inputs = report.get("inputs") or []
    if not inputs and not data.mappings:
        return ""
    blocks = []
    for inp in inputs or [{"dataset_id": k} for k in data.mappings]:
        did = inp.get("dataset_id")
        spec = data.mappings.get(did, {})
        facts = [(k, inp.get(k)) for k in ("n_cells_in", "n_cells_out", "controls", "perturbed", "dropped",
                                            "conditions", "gene_id_type", "already_log", "normalised", "policy")
                 if k in inp]
        rows = []
        fields = inp.get("fields") or {k: v for k, v in spec.items() if isinstance(v, dict) and "type" in v}
        for field, m in fields.items():
            src = m.get("source", m.get("source_key"))
            if m.get("type") == "constant":
                src = f"= {m.get('source') or m.get('value')}"
            elif m.get("expression"):
                src = m["expression"]
            rows.append([f"<code>{_e(src if src is not None else '-')}</code>", "&rarr;", f"<b>{_e(field)}</b>",
                         _e(m.get("type")), _e(_f(m.get("confidence"), 2)), _e(m.get("reason"))])
        extra = [("control labels", spec.get("control_labels")), ("unknown labels", spec.get("unknown_labels")),
                 ("combination delimiters", spec.get("combo_delimiters")), ("label aliases", spec.get("label_aliases")),
                 ("dropped cells", inp.get("dropped_reasons")), ("repairs", inp.get("repairs"))]
        blocks.append(
            f'<div class="input"><h3>{_e(did)} <span class="muted">{_e(inp.get("path"))}</span></h3>'
            + _facts(facts)
            + _table(["source column", "", "canonical field", "how", "confidence", "why"], rows, "mapping")
            + _table(["", ""], ([_e(k), _value(v)] for k, v in extra if v is not None), "kv")
            + "</div>")
    split = report.get("split_info") or {}
    if split:
        n = split.get("n_cells") or {}
        rows = [[_e(s), _e(len(split.get(f"{s}_conditions") or [])), _e(n.get(s)),
                 _e(", ".join(split.get(f"{s}_conditions") or [])[:400])] for s in ("train", "val", "test")]
        blocks.append("<h3>Split</h3>" + _table(["split", "perturbations", "cells", "which"], rows))
    lead = (f"{_e(report.get('n_cells'))} cells &times; {_e(report.get('n_genes'))} genes after unification "
            f"(gene key {_e(report.get('gene_key'))}). What the Unifier mapped, per input.") if report else ""
    return _section("data", "Data: the Unifier's mapping", "".join(blocks), lead)


def kb_section(data: RunData) -> str:
    recs = [r for r in data.transcript if any(w in str(r.get("type", "")).lower() for w in KB_WORDS)]
    if not recs:
        return ""
    body = "".join(f'<div class="rec"><span class="muted">#{_e(r.get("seq"))} {_e(r.get("source"))} '
                   f'{_e(r.get("type"))}</span>{_value(r.get("content"))}</div>' for r in recs)
    return _section("kb", "Knowledge base retrieval", body, "What the search retrieved from past runs.")


def _llm_table(recs: list[dict]) -> str:
    rows = []
    for r in recs:
        c = r.get("content") if isinstance(r.get("content"), dict) else {}
        usage = c.get("usage") if isinstance(c.get("usage"), dict) else c
        failed = f"failed: {str(c['error'])[:80]}" if c.get("error") else ""
        status = c.get("status", c.get("outcome", failed or ("fell back" if c.get("fell_back") else "")))
        rows.append([_e(r.get("seq")), _e(r.get("source")), _e(r.get("type")), _e(c.get("model") or c.get("provider")), _e(_f(status)),
                     _e(_f(usage.get("prompt_tokens"))), _e(_f(usage.get("completion_tokens"))),
                     _e(_f(usage_tokens(c)))])
    return _table(["#", "agent", "call", "model", "status", "prompt tokens", "completion tokens", "total"], rows)


def llm_section(data: RunData) -> str:
    calls = data.llm_calls()
    totals = (data.status or {}).get("llm")
    llm_cfg = data.task.get("llm")
    if not calls and not totals:
        return _section("llm", "LLM usage", "<p>No LLM was called: every decision came from the builtin policies.</p>"
                        if not llm_cfg else "<p>An LLM was configured but no call was recorded.</p>")
    body = ""
    if totals:
        body += "<h3>Totals</h3>" + _value(totals)
    if calls:
        body += f"<h3>{len(calls)} call(s)</h3>" + _llm_table(calls)
    tokens = data.llm_tokens()
    return _section("llm", "LLM usage", body, f"{_e(tokens)} tokens in all." if tokens is not None else "")


def transcript_section(data: RunData) -> str:
    recs = data.transcript
    if not recs:
        return ""
    sources = list(dict.fromkeys(r.get("source", "") for r in recs))
    fig = go.Figure()
    symbols = {"message": "circle", "tool_call": "square", "llm_call": "star", "event": "diamond"}
    for kind, sym in symbols.items():
        sub = [r for r in recs if r.get("kind") == kind]
        if sub:
            fig.add_trace(go.Scatter(
                x=[r.get("ts") for r in sub], y=[r.get("source") for r in sub], mode="markers", name=kind,
                marker=dict(symbol=sym, size=11), hoverinfo="text",
                hovertext=[f"#{r.get('seq')} {_e(r.get('type'))}<br>{_e(_summary(r.get('content'))[:120])}" for r in sub]))
    fig.update_yaxes(categoryorder="array", categoryarray=sources[::-1])
    fig.update_layout(title="who spoke when", legend=dict(orientation="h", y=-0.2))
    head = data.chain_head
    chain = ""
    if head:
        chain = f'<p>Chain head: <code>{_e(head["hash"])}</code> after {_e(head["records"])} records (as the file holds it now).'
        recorded = (data.verdict or {}).get("transcript_head")
        if isinstance(recorded, dict):
            chain += f' The Judge anchored the verdict at <code>{_e(recorded.get("hash"))}</code> ({_e(recorded.get("records"))} records): '
            chain += _e(anchor_status(data.transcript, recorded)) + "."
        chain += " <span class=\"muted\">Check it with <code>harmonycell replay RUN --verify</code>.</span></p>"
    rows = ([_e(r.get("seq")), _e(str(r.get("ts", ""))[11:23]), _e(r.get("kind")), _e(r.get("source")),
             f"<b>{_e(r.get('type'))}</b>", _e(_summary(r.get("content"))), f"<code>{_e(str(r.get('hash', ''))[:12])}</code>"]
            for r in recs)
    table = _table(["#", "time", "kind", "source", "type", "content", "hash"], rows, "timeline")
    body = (chain + _fig(fig, "fig-timeline", height=max(260, 36 * len(sources) + 140))
            + f"<details><summary>all {len(recs)} records</summary>{table}</details>")
    return _section("transcript", "Transcript", body)


def anchor_status(records: list[dict], anchor: dict) -> str:
    """Where the verdict's recorded chain head sits in the transcript as it is now."""
    n = anchor.get("records")
    if not isinstance(n, int) or n < 1 or n > len(records):
        return "not found in this transcript (check it with harmonycell replay --verify)"
    if records[n - 1].get("hash") != anchor.get("hash"):
        return f"record {n} of this transcript has another hash: the file changed (check it with harmonycell replay --verify)"
    later = len(records) - n
    return f"record {n} of this transcript" + (f", followed by {later} later record(s)" if later else ", its last")


# ---------------------------------------------------------------- pages

STYLE = """
:root{--fg:#202124;--muted:#5f6368;--line:#e0e3e7;--bg:#f6f8fb;--good:#188038;--bad:#d93025;--accent:#1a73e8}
*{box-sizing:border-box}body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}header .meta{color:var(--muted)}
nav{position:sticky;top:0;z-index:5;background:#fffd;backdrop-filter:blur(4px);border-bottom:1px solid var(--line);padding:6px 28px}
nav a{margin-right:16px;color:var(--accent);text-decoration:none;font-weight:500}
main{max-width:1280px;margin:0 auto;padding:18px 28px 60px}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:0 0 18px;box-shadow:0 1px 2px #0000000d}
.card h2{margin:0 0 8px;font-size:18px}.lead{color:var(--muted);margin:0 0 10px}
h3{font-size:15px;margin:16px 0 6px}h4{font-size:13px;margin:14px 0 4px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
table{border-collapse:collapse;width:100%;margin:6px 0 10px;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;background:#fafbfc}table.kv{width:auto}table.kv td:first-child{color:var(--muted)}
.facts{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 10px}.fact{background:#f1f3f4;border-radius:8px;padding:4px 12px;min-width:90px}
.fact span{display:block;font-size:11px;color:var(--muted)}.fact b{font-size:14px}
.badge{display:inline-block;padding:3px 10px;border-radius:999px;font-weight:700;font-size:12px;letter-spacing:.04em;margin-right:6px}
.badge.good{background:#e6f4ea;color:var(--good)}.badge.bad{background:#fce8e6;color:var(--bad)}.badge.neutral{background:#eef0f2;color:var(--muted)}
.badges .badge{font-size:15px;padding:5px 14px}.headline{font-size:16px;margin:10px 0}
pre{background:#f8f9fa;border:1px solid var(--line);border-radius:6px;padding:10px;overflow:auto;max-height:420px;font-size:12px;margin:4px 0}
code{font-size:12px}.muted{color:var(--muted);font-weight:400}
.path .step{display:inline-block;background:#e8f0fe;color:#174ea6;border-radius:4px;padding:1px 8px;font-family:monospace}
.pick{display:block;margin:6px 0 10px;color:var(--muted)}select{font:inherit;padding:3px 6px;margin-left:6px}
.node-detail{border-top:2px solid var(--accent);padding-top:6px}.react,.rec{border-left:3px solid #fbbc04;padding:2px 10px;margin:6px 0}
.input{margin-bottom:14px}details summary{cursor:pointer;color:var(--accent);margin:6px 0}
.runs td:first-child{font-family:monospace}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var sel = document.getElementById('node-select'), tree = document.getElementById('tree');
  if (!sel || !tree) return;
  function show(id) {
    document.querySelectorAll('.node-detail').forEach(function (d) {
      d.hidden = d.dataset.node !== id;
      if (!d.hidden) d.querySelectorAll('.js-plotly-plot').forEach(function (p) { Plotly.Plots.resize(p); });
    });
    sel.value = id;
    document.body.dataset.selectedNode = id;
  }
  sel.addEventListener('change', function () { show(sel.value); });
  tree.on('plotly_click', function (ev) {
    var id = ev.points && ev.points[0] && ev.points[0].customdata;
    if (id && id !== 'root') show(id);
  });
  if (sel.dataset.start) show(sel.dataset.start);
});
"""


def page(title: str, header: str, nav: list[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in nav)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>"
            f"<header>{header}</header><nav>{links}</nav><main>{body}</main><script>{SCRIPT}</script></body></html>")


def render_html(data: RunData) -> str:
    """The run's page: verdict, test metrics, per-query plots, tree, mapping, KB, LLM, transcript."""
    sections = [("verdict", "Verdict", verdict_section(data)), ("metrics", "Test split", metrics_section(data)),
                ("queries", "Per query", per_query_section(data)), ("search", "Search tree", search_section(data)),
                ("data", "Data", mapping_section(data)), ("kb", "Knowledge base", kb_section(data)),
                ("llm", "LLM", llm_section(data)), ("transcript", "Transcript", transcript_section(data))]
    sections = [s for s in sections if s[2]]
    inputs = ", ".join(str(i.get("path", "")).rsplit("/", 1)[-1] for i in data.task.get("inputs") or [])
    state = (data.status or {}).get("state")
    header = (f"<h1>HarmonyCell run {_e(data.run_id)}</h1><div class=\"meta\">task <b>{_e(data.task.get('task'))}</b>"
              f" &middot; inputs {_e(inputs)} &middot; seed {_e(data.task.get('seed'))} &middot; budget "
              f"{_e(data.task.get('budget_nodes'))} node(s) &middot; {_e(state)} &middot; created {_e(data.task.get('created'))}</div>")
    return page(f"HarmonyCell {data.run_id}", header, [(a, t) for a, t, _ in sections], "".join(s for _, _, s in sections))


def render_compare(runs: list[RunData]) -> str:
    """Several runs on one page: their test metrics (with intervals where recorded) and their trees."""
    rows, keys = [], [k for k in HEADLINE if any(k in test_metrics(r)[0] for r in runs)]
    ids = [r.run_id for r in runs]
    # a copied run folder keeps its run id: tell such runs apart by their folder
    labels = [i if ids.count(i) == 1 else f"{i} ({r.root.rstrip('/').rsplit('/', 1)[-1]})" for i, r in zip(ids, runs)]
    for r, label in zip(runs, labels):
        model, _ = test_metrics(r)
        v = r.verdict or {}
        verdict = ("VALID" if v.get("valid") else "INVALID") if v else "no verdict"
        if "useful" in v:
            verdict += ", " + ("useful" if v["useful"] else "not useful")
        best = r.selected_path
        rows.append([_e(label), _e(r.task.get("task")), _e(best), _e(verdict)] + [_e(_f(model.get(k))) for k in keys])
    body = _table(["run", "task", "selected path", "verdict", *map(_e, keys)], rows, "runs")
    fig = go.Figure()
    for r, label in zip(runs, labels):
        model, _ = test_metrics(r)
        fig.add_trace(go.Bar(name=label, x=keys, y=[model.get(k) for k in keys]))
    fig.update_layout(barmode="group", title="test metrics of each run's selected node")
    body += _fig(fig, "compare-metrics", height=340)
    comps = [dict(c, metric=c.get("metric")) for r in runs for c in ((r.verdict or {}).get("comparisons") or [])]
    if comps:
        labelled = [dict(c, baseline=f"{c.get('baseline')} [{label}]") for r, label in zip(runs, labels)
                    for c in ((r.verdict or {}).get("comparisons") or [])]
        body += "<h3>Differences from baselines, with intervals</h3>" + comparisons_html(labelled, "compare-intervals")
    box = go.Figure()
    for r, label in zip(runs, labels):
        per = (r.test_scores or {}).get("per_perturbation") or []
        vals = [(p.get("metrics") or {}).get("DeltaPCC") for p in per]
        if any(v is not None for v in vals):
            box.add_trace(go.Box(y=vals, name=label, boxpoints="all", jitter=0.4, pointpos=0,
                                 hovertext=[p.get("condition") for p in per]))
    if box.data:
        box.update_layout(title="DeltaPCC per held-out query (spread across queries)", showlegend=False)
        body += _fig(box, "compare-queries", height=360)
    metrics = _section("metrics", "Test metrics", body, f"{len(runs)} runs. A difference without an interval is not a win: "
                       "intervals appear where the run recorded them.")
    trees = make_subplots(rows=1, cols=len(runs), subplot_titles=labels)
    crange, seen = reward_range(runs), set()  # one colour scale for all trees
    for i, r in enumerate(runs, start=1):
        add_tree_traces(trees, r, row=1, col=i, colorbar=i == 1, crange=crange, legend_seen=seen)
    trees.update_xaxes(visible=False)
    trees.update_yaxes(visible=False, autorange="reversed")
    trees.update_layout(hovermode="closest", legend=dict(orientation="h", y=-0.08))
    tree_sec = _section("trees", "Search trees", _fig(trees, "compare-trees", height=420))
    header = f"<h1>HarmonyCell: {len(runs)} runs compared</h1><div class=\"meta\">{_e(', '.join(labels))}</div>"
    return page("HarmonyCell runs compared", header, [("metrics", "Test metrics"), ("trees", "Search trees")],
                metrics + tree_sec)
