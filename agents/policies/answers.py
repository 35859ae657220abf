"""Answers to a person's questions, read from the run folder's records and citing them.

Builtin: a small classifier (a pattern per topic) and one answerer per topic, each reading the
records that hold the fact (audit/, unify/, tree.json, verdict.json, baselines.json, nodes/,
the transcript) and naming them. LLM: the model gets the same records as text and must reply with
JSON ``{"answer", "sources"}`` whose sources are records it was given; otherwise it is re-asked,
then the builtin answer is used. Nothing here computes a result: it reads what the run wrote.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib.util import find_spec

from harmonycell.agents import facts
from harmonycell.agents.summaries import summary
from harmonycell.agents.unifier import held_out_units, held_units
from harmonycell.agents.policies.llm import LLMConfig, ReplyInvalid, ask_validated, build_client, run_sync
from harmonycell.tools.record.runfolder import RunFolder
from harmonycell.tools.schema import N_HVG
from harmonycell.tools.record.transcript import read_records
from harmonycell.tools.evaluation.metrics import SEARCH_METRIC
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.actions import all_backbone_paths

QUESTION_START = re.compile(r"^\s*(?:why|what|which|how|who|when|where|is|are|was|were|did|does|do|can|could|"
                            r"show|tell|explain|list|give|describe)\b", re.I)

# topic -> pattern; the first that matches wins, so specific topics come before general ones
TOPICS: list[tuple[str, str]] = [
    ("next", r"measure next|next experiment|what should we (?:measure|test|do|screen) next|experiment planning"),
    ("code", r"\bcode\b|model\.py|\bsource\b"),
    ("tree", r"\btree\b|all (?:the )?nodes|which nodes|what .*nodes .*(?:tried|trained)"),
    ("failures", r"fail|error|repair|debug|crash|broke|abandon"),
    ("baselines", r"baseline|compar|better than|beat|interval|versus|\bvs\b"),
    ("winner", r"\bwon\b|\bwin|winner|best (?:model|node)|which model|chosen|selected"),
    ("search", r"(?:the )?search|will (?:it|you) try|how long|take|time budget|which models"),
    ("held_out", r"held[- ]out|hold(?:ing)?[- ]out|\bheld\b|test (?:set|split)|unseen|left out|which (?:cell types?|units?|pairs?)"),
    ("dropped", r"dropp|discard|removed|lost|filter|cells? (?:were|are) (?:removed|excluded)"),
    ("genes", r"\bgenes?\b"),
    ("mapping", r"\bmapp|\bmap\b|column|field|\bwhy .*(?:control|perturbation|cell type)"),
    ("audit", r"\baudit|found in|in (?:the )?file|profile|look like|raw counts|normali[sz]"),
    ("report", r"\breport\b|verdict|valid"),
]

@dataclass
class Answer:
    text: str
    sources: list[str] = field(default_factory=list)
    topic: str = ""
    by: str = "builtin"


def is_question(said: str) -> bool:
    return said.strip().endswith("?") or bool(QUESTION_START.match(said))


def classify(said: str) -> str | None:
    for topic, pat in TOPICS:
        if re.search(pat, said, re.I):
            return topic
    return None


def _json(run: RunFolder, rel: str):
    p = run.root / rel
    return json.loads(p.read_text()) if p.exists() else None


def _unify(run: RunFolder) -> dict | None:
    return _json(run, "unify/unify_report.json")


def _not_yet(what: str) -> Answer:
    return Answer(f"{what} is not known yet: the run has not got that far.")


def _which_inputs(run: RunFolder, said: str) -> list[str]:
    stems = sorted(p.stem for p in run.audit_dir.glob("*.json"))
    words = set(re.findall(r"[\w.-]+", said.lower()))
    named = [s for s in stems if s.lower() in said.lower() or s.split("_")[0].lower() in words]
    return named or stems


def answer_audit(run: RunFolder, said: str) -> Answer:
    lines, sources = [], []
    for stem in _which_inputs(run, said):
        a = _json(run, f"audit/{stem}.json")
        if a is None:
            continue
        cols = ", ".join(f"{c['name']} ({c['n_unique']} values, e.g. {', '.join(c['sampled_values'][:3])})"
                         for c in a["obs"])
        lines.append(f"{stem}: {a['n_cells']} cells x {a['n_genes']} genes; X: {a['x']['reason']}; "
                     f"obs columns: {cols}; gene ids: {a['var']['index_type']}")
        sources.append(f"audit/{stem}.json")
    return Answer("\n".join(lines), sources) if lines else _not_yet("the audit")


FIELD_WORDS = {"condition_name": ("perturbation", "condition", "guide", "drug", "target"),
               "is_control": ("control",), "cell_type": ("cell type", "cell line", "cell_type", "line"),
               "donor_id": ("donor",), "batch_id": ("batch", "replicate"), "dose": ("dose",),
               "pert_type": ("type of perturbation", "pert_type", "crispr", "chemical")}


def answer_mapping(run: RunFolder, said: str) -> Answer:
    rep = _unify(run)
    if rep is None:
        return _not_yet("the mapping")
    low = said.lower()
    lines = []
    if "control" in low:
        for inp in rep["inputs"]:
            ctl = [n for n in inp.get("labels") or [] if n["role"] == "control"]
            labels = ", ".join(f"{n['label']!r} ({n['cells']} cells; {n['rule']})" for n in ctl) or "none by label"
            lines.append(f"{inp['dataset_id']}: {inp['controls']} control cells; control label(s) {labels}")
    for inp in rep["inputs"]:
        if any(s.lower() in low for s in (i["dataset_id"] for i in rep["inputs"])) and inp["dataset_id"].lower() not in low:
            continue
        for name, f in inp["fields"].items():
            asked = (f.get("source") and str(f["source"]).lower() in low) or any(w in low for w in FIELD_WORDS.get(name, ()))
            if not asked:
                continue
            src = f"column '{f['source']}'" if f["type"] == "direct" else (
                f"constant {f['source']!r}" if f["type"] == "constant" else f["type"])
            lines.append(f"{inp['dataset_id']}: {name} <- {src} ({f['type']}, confidence {f['confidence']:.2f}): {f['reason']}")
    if not lines:  # no field named: the whole mapping, one line per field
        for inp in rep["inputs"]:
            fields = "; ".join(f"{n} <- {f.get('source') or f['type']}" for n, f in inp["fields"].items())
            lines.append(f"{inp['dataset_id']} ({inp['policy']} policy): {fields}")
    return Answer("\n".join(lines), ["unify/unify_report.json"])


def answer_genes(run: RunFolder, said: str) -> Answer:
    rep = _unify(run)
    if rep is None:
        return _not_yet("the gene set")
    per = ", ".join(f"{i['dataset_id']} {i['genes_in']}" for i in rep["inputs"])
    lost = ", ".join(f"{i['dataset_id']} lost {i['genes_lost_in_merge']}" for i in rep["inputs"] if i.get("genes_lost_in_merge"))
    text = (f"{rep['n_genes']} genes: the inputs have {per} genes; aligned on {rep['gene_key']} ids, "
            f"{rep['genes_common']} are measured in every input (the intersection{'; ' + lost if lost else ''}); "
            + (f"all of them are kept (fewer than the cap of {N_HVG} highly variable genes)."
               if rep["n_hvg"] >= rep["genes_common"] else
               f"of those, the {rep['n_hvg']} most variable are kept (the cap is {N_HVG})."))
    return Answer(text, ["unify/unify_report.json"])


def answer_held_out(run: RunFolder, said: str) -> Answer:
    rep = _unify(run)
    if rep is None or not rep.get("split_info"):
        return _not_yet("the split")

    info = rep["split_info"]
    unit, held = held_out_units(info)
    n = info.get("n_cells", {})
    lines = [f"task {info['task']} (seed {info['seed']}): the unit held out is a {unit}."]
    for split, units in held.items():
        names = units if len(units) <= 12 else units[:12] + [f"... {len(units) - 12} more"]
        lines.append(f"{split} ({n.get(split, '?')} cells): {held_units(units)}; all: {', '.join(names)}")
    lines.append(f"train: {n.get('train', '?')} cells, {len(info.get('train_conditions', []))} perturbation(s)")
    return Answer("\n".join(lines), ["unify/unify_report.json (split_info)"])


def answer_dropped(run: RunFolder, said: str) -> Answer:
    rep = _unify(run)
    if rep is None:
        return _not_yet("the number of dropped cells")
    lines = []
    for i in rep["inputs"]:
        why = "; ".join(f"{n} {r}" for r, n in i.get("dropped_reasons", {}).items()) or "none"
        lines.append(f"{i['dataset_id']}: {i['dropped']} of {i['n_cells_in']} cells dropped ({why})")
    total = sum(i["dropped"] for i in rep["inputs"])
    return Answer(f"{total} cells dropped in all.\n" + "\n".join(lines), ["unify/unify_report.json"])


def answer_search(run: RunFolder, said: str) -> Answer:
    cfg = run.config()
    banned = set(cfg.exclude)
    plan = [a for a in all_backbone_paths() if not banned & set(a.split("/"))]
    tried = []
    if run.tree_json.exists():
        tree = T.Tree.load(run.tree_json)
        tried = [n for n in tree.nodes.values() if n.id != T.ROOT]
    first = plan[: cfg.budget_nodes]
    text = (f"budget {cfg.budget_nodes} node(s){f', {cfg.time_limit_s / 60:g} min of training' if cfg.time_limit_s else ''}; "
            f"the first untried backbones in order: {', '.join(first)}"
            f"{' (then refinements of the best)' if cfg.budget_nodes > len(plan) else ''}. "
            f"Excluded: {', '.join(sorted(banned)) or 'nothing'}. Each node trains up to {cfg.epochs} epochs "
            f"(stopped early when validation stops improving), at most {cfg.node_timeout_s:g}s per node, so at most "
            f"{cfg.budget_nodes * cfg.node_timeout_s / 60:g} min for the whole search.")
    sources = ["task.yaml"]
    times = [n.wall_s for n in tried if n.wall_s]
    if times:
        text += f" Nodes so far took {', '.join(f'{t:.0f}s' for t in times)}."
        sources.append("tree.json")
    return Answer(text, sources)


def _tree(run: RunFolder) -> T.Tree | None:
    return T.Tree.load(run.tree_json) if run.tree_json.exists() else None


def answer_winner(run: RunFolder, said: str) -> Answer:
    tree = _tree(run)
    picked = tree.pick() if tree else None
    if picked is None:
        return Answer("no node finished training, so no model won.", ["tree.json"] if tree else [])
    inside = {n.id for n in tree.picked_nodes(picked)}
    others = [n for n in tree.trained() if n.id not in inside]  # decision nodes (a paradigm) train nothing
    rest = "; ".join(f"{n.id} {n.action} {n.status}" + (f" reward {n.reward:.3f}" if n.reward is not None else "")
                     for n in others)
    node = tree.nodes.get(picked)
    how = (f" Its search reward is {node.reward:.3f} (validation {SEARCH_METRIC} {_f(node.val_metric)}, "
           f"{node.wall_s or 0:.0f}s of training; reward = {T.W_PERF:g} x validation metric + {T.W_TIME:g} x a "
           f"time term relative to the first node's training time)." if node is not None and node.reward is not None else "")
    text = (f"{picked} ({tree.describe(picked)}) won: it is the run's pick. {tree.pick_sentence(picked)}{how} "
            f"Others: {rest or 'none'}. It was chosen on validation only; the test split scored it once, afterwards.")
    return Answer(text, ["tree.json"])


def answer_baselines(run: RunFolder, said: str) -> Answer:
    verdict, base = _json(run, "verdict.json"), _json(run, "baselines.json")
    if verdict is None:
        return _not_yet("the comparison with the baselines")
    sources = ["verdict.json"]
    lines = []
    for c in verdict.get("comparisons") or []:  # paired, with sign-flip tests (when the Evaluator wrote them)
        ci = (f" [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" if c.get("ci_low") is not None else " (no interval)")
        lines.append(f"vs {c['baseline']} on {c['metric']}: difference {c['mean_diff']:+.3f}{ci} over "
                     f"{c.get('n', '?')} queries -> {c['conclusion']}")
    if not lines:
        lines = [f"{ch['name']}: {'yes' if ch['passed'] else 'no'} ({ch['detail']})"
                 for ch in verdict["checks"] if ch["name"].startswith("beats_")]
        lines.append("(no intervals in this run's verdict: a difference without an interval is not a win)")
    if base:
        sources.append("baselines.json")
        lines.append("baselines on the test split: " + "; ".join(
            f"{b} DeltaPCC {_f(v.get('DeltaPCC'))}, RMSE {_f(v.get('RMSE'))}" for b, v in base["baselines"].items()))
    return Answer("\n".join(lines), sources)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def answer_failures(run: RunFolder, said: str) -> Answer:
    lines = []
    for rec in read_records(run.transcript):
        c = rec.get("content") or {}
        if rec.get("type") == "NodeFailed":
            last = (c["error_tail"].strip().splitlines() or [""])[-1]
            lines.append(f"#{rec['seq']} {c['node_id']} ({c['action']}) failed: {c['status']}: {last}")
        elif rec.get("type") == "NodeExecuted" and c.get("attempts", 1) > 1:
            lines.append(f"#{rec['seq']} {c['node_id']} repaired by the {rec['source']}: ran on attempt {c['attempts']}")
        elif rec.get("type") == "NodeAbandoned":
            lines.append(f"#{rec['seq']} {c['node_id']} abandoned after {c['attempts']} attempt(s): {c['reason']}")
        elif rec.get("type") == "run_failed":
            lines.append(f"#{rec['seq']} the run failed: {c.get('error')}")
    text = "\n".join(lines) if lines else "nothing failed: every node ran on its first attempt."
    return Answer(text, ["transcript.jsonl"])


def tree_text(tree: T.Tree) -> str:
    out = []

    def walk(nid: str, depth: int) -> None:
        for cid in tree.nodes[nid].children:
            n = tree.nodes[cid]
            r = f" reward {n.reward:.3f}" if n.reward is not None else ""
            m = f" val {SEARCH_METRIC} {n.val_metric:.3f}" if n.val_metric is not None else ""
            out.append(f"{'  ' * depth}{n.id} {n.action} [{n.status}]{m}{r} visits {n.visits}")
            walk(cid, depth + 1)

    walk(T.ROOT, 0)
    return "\n".join(out) or "(no nodes yet)"


def answer_tree(run: RunFolder, said: str) -> Answer:
    tree = _tree(run)
    return Answer(tree_text(tree), ["tree.json"]) if tree else _not_yet("the search tree")


def answer_code(run: RunFolder, said: str) -> Answer:
    m = re.search(r"\b(n\d{3})\b", said)
    tree = _tree(run)
    node = m.group(1) if m else (tree.best().id if tree and tree.best() else None)
    if node is None:
        return Answer("which node? e.g. 'show n001's code'")
    path = run.node_dir(node) / "model.py"
    if not path.exists():
        return Answer(f"node {node} has no code in {run.nodes_dir.name}/ (nodes: "
                      f"{', '.join(sorted(p.name for p in run.nodes_dir.glob('n*'))) or 'none'})")
    return Answer(f"{node}'s model.py:\n{path.read_text()}", [f"nodes/{node}/model.py"])


def planning_available() -> bool:
    return find_spec("harmonycell.tools.planning") is not None


def answer_next(run: RunFolder, said: str) -> Answer:
    if planning_available():
        return Answer(f"experiment planning takes over from here: run `harmonycell plan {run.root}`.", [])
    return Answer("experiment planning (what to measure next) is not available in this version yet.", [])


def answer_report(run: RunFolder, said: str) -> Answer:
    if not run.report_md.exists():
        return _not_yet("the report")
    return Answer(run.report_md.read_text(), ["report.md"])


ANSWERERS = {"audit": answer_audit, "mapping": answer_mapping, "genes": answer_genes, "held_out": answer_held_out,
             "dropped": answer_dropped, "search": answer_search, "winner": answer_winner,
             "baselines": answer_baselines, "failures": answer_failures, "tree": answer_tree,
             "code": answer_code, "next": answer_next, "report": answer_report}


def answer_facts(run: RunFolder, said: str) -> Answer:
    """Any other question: the run's fact sheet, the facts nearest the question, their records cited."""
    text, sources = facts.answer_from(facts.run_facts(run), said)
    return Answer(text, sources)


def builtin_answer(run: RunFolder, said: str) -> Answer:
    topic = classify(said)
    ans = (ANSWERERS[topic] if topic else answer_facts)(run, said)
    ans.topic = topic or "facts"
    return ans


# --- the LLM policy: grounded on the records, citing them --------------------------------------

SYSTEM = ("You answer a biologist's question about one run of a single-cell perturbation modelling "
          "pipeline, using only the records given. Reply with JSON {\"answer\": str, \"sources\": [record names]}.")
RECORD_CHARS = 6000


def records(run: RunFolder) -> dict[str, str]:
    """The run's small records, by name, as text (long ones cut)."""
    names = ["task.yaml", "unify/unify_report.json", "tree.json", "verdict.json", "baselines.json"]
    names += [f"audit/{p.name}" for p in sorted(run.audit_dir.glob("*.json"))]
    out = {n: (run.root / n).read_text()[:RECORD_CHARS] for n in names if (run.root / n).exists()}
    rep = _unify(run)
    if rep is not None:  # every label is in the report; the model gets the controls and the totals
        for i in rep["inputs"]:
            notes = i.get("labels") or []
            i["labels"] = [n for n in notes if n["role"] != "perturbation"]
            i["perturbation_labels"] = {"count": len(notes) - len(i["labels"]),
                                        "most_cells": [n["label"] for n in notes if n["role"] == "perturbation"][:10]}
        out["unify/unify_report.json"] = json.dumps(rep)[:RECORD_CHARS]
    if run.transcript.exists():
        out["transcript.jsonl"] = "\n".join(
            f"#{r['seq']} {r['source']} {r['type']}: {summary(r['type'], r.get('content') or {})}"
            for r in read_records(run.transcript) if r.get("kind") == "message")[:RECORD_CHARS]
    return out


def parse_answer(reply: str, known: set[str]) -> Answer:
    text = reply[reply.find("{"): reply.rfind("}") + 1]
    try:
        data = json.loads(text)
        answer, sources = str(data["answer"]).strip(), [str(s) for s in data["sources"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ReplyInvalid('reply with one JSON object {"answer": "...", "sources": ["record name", ...]}') from None
    if not answer:
        raise ReplyInvalid("the answer is empty")
    unknown = [s for s in sources if s not in known]
    if not sources or unknown:
        raise ReplyInvalid(f"cite the records you used, by name, from: {sorted(known)}"
                           + (f" (not records: {unknown})" if unknown else ""))
    return Answer(answer, sources, by="llm")


def llm_answer(run: RunFolder, said: str, llm: LLMConfig) -> tuple[Answer, dict]:
    recs = records(run)
    user = "\n\n".join(f"=== record {n} ===\n{t}" for n, t in recs.items()) + f"\n\nQuestion: {said}"
    outcome = run_sync(ask_validated(build_client(llm), SYSTEM, user, lambda r: parse_answer(r, set(recs)),
                                     max_asks=llm.max_asks, retries=llm.transport_retries,
                                     reask="Reply again with the JSON object, citing only the records given."))
    call = {"model": llm.model, "attempts": outcome.attempts, "rejected": outcome.reasons, "error": outcome.error}
    if outcome.value is None:
        ans = builtin_answer(run, said)
        ans.by = "builtin (llm fallback)"
        return ans, {**call, "outcome": "fell back to builtin"}
    outcome.value.topic = classify(said) or ""
    return outcome.value, {**call, "outcome": "accepted"}


def answer(run: RunFolder, said: str, llm: LLMConfig | None = None) -> tuple[Answer, dict | None]:
    return llm_answer(run, said, llm) if llm else (builtin_answer(run, said), None)
