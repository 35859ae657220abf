"""A run's fact sheet: one sentence per fact, each with the record it was read from.

The chat answers a question it has no dedicated answer for by retrieving the facts nearest to it
(all-MiniLM-L6-v2 embeddings, the model the knowledge base already uses, plus shared words) and
citing their records. Facts come from the run folder only (audit, mapping with its labels and
counts, split, genes, baselines, tree, verdict); before a run exists, from the audits of the files
already named. Nothing here computes a result: it restates what the records say.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harmonycell.agents.unifier import held_out_units
from harmonycell.tools.record.runfolder import RunFolder

MAX_LABEL_FACTS = 40  # labels per input stated one by one (the most frequent); the rest summed up
MIN_SCORE = 0.35  # below this nothing retrieved is about the question
TOP_K = 6


@dataclass(frozen=True)
class Fact:
    text: str
    source: str  # the record, as the run folder names it


def _json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def audit_facts(a: dict, source: str) -> list[Fact]:
    """What the audit of one input file found."""
    name = a["name"]
    out = [Fact(f"input {name} has {a['n_cells']} cells and {a['n_genes']} genes; gene ids are "
                f"{a['var']['index_type']}", source),
           Fact(f"the expression values (X) of {name}: {a['x']['reason']}", source)]
    for c in a["obs"]:
        top = c.get("top_counts") or {}
        vals = (", ".join(f"{k} ({v} cells)" for k, v in list(top.items())[:8]) if top
                else ", ".join(c["sampled_values"][:8]))
        out.append(Fact(f"column {c['name']!r} of {name} has {c['n_unique']} distinct values, e.g. {vals}", source))
    return out


def plan_facts(name: str, spec, notes, source: str) -> list[Fact]:
    """What the Unifier will do with a file not yet unified: its control labels and label column."""
    out = [Fact(f"in {name} the perturbation label is read from column "
                f"{spec.condition_name.source_key or spec.condition_name.expression!r}: {spec.condition_name.reason}",
                source)]
    ctl = [n for n in notes if n.role == "control"]
    if ctl:
        out.append(Fact(f"control cells of {name}: {sum(n.cells for n in ctl)} cells labelled "
                        + ", ".join(f"{n.label!r} ({n.cells} cells, {n.rule})" for n in ctl), source))
    return out


def unify_facts(rep: dict, source: str = "unify/unify_report.json") -> list[Fact]:
    """The mapping with its labels and counts, dropped cells, genes and the split."""
    out: list[Fact] = []
    for i in rep["inputs"]:
        d = i["dataset_id"]
        out.append(Fact(f"{d}: {i['controls']} control cells and {i['perturbed']} perturbed cells in "
                        f"{i['conditions']} perturbation conditions; {i['dropped']} of {i['n_cells_in']} cells "
                        f"dropped" + (f" ({'; '.join(f'{n} {r}' for r, n in i['dropped_reasons'].items())})"
                                      if i.get("dropped_reasons") else ""), source))
        notes = i.get("labels") or []
        ctl = [n for n in notes if n["role"] == "control"]
        if ctl:
            out.append(Fact(f"control cells of {d}: {sum(n['cells'] for n in ctl)} cells count as controls, "
                            f"labelled " + ", ".join(
                                f"{n['label']!r} ({n['cells']} cells; read from tokens {' '.join(n['tokens'])}: "
                                f"{n['rule']})" for n in ctl), source))
        for name, f in i["fields"].items():
            src = f"column {f['source']!r}" if f["type"] == "direct" else (
                f"the expression {f['source']}" if f["type"] == "logic" else
                f"the constant {f['source']!r}" if f["type"] == "constant" else "nothing (the default)")
            out.append(Fact(f"{d}: the canonical field {name} is mapped from {src} ({f['type']}, confidence "
                            f"{f['confidence']:.2f}): {f['reason']}", source))
        pert = [n for n in notes if n["role"] == "perturbation"]
        for n in pert[:MAX_LABEL_FACTS]:
            what = (f"a knockout/guide target of gene {n['gene']}" + (f" (guide {n['guide']})" if n.get("guide") else "")
                    if n["kind"] == "target" else "a perturbation that is not a gene (a drug, stimulus or other)")
            out.append(Fact(f"label {n['label']!r} of {d} is {what}; {n['cells']} cells", source))
        if len(pert) > MAX_LABEL_FACTS:
            rest = pert[MAX_LABEL_FACTS:]
            out.append(Fact(f"{d} has {len(rest)} more perturbation labels with {sum(n['cells'] for n in rest)} cells",
                            source))
        unknown = [n for n in notes if n["role"] == "unknown"]
        if unknown:
            out.append(Fact(f"labels of {d} meaning 'perturbation unknown' (cells dropped): "
                            + ", ".join(f"{n['label']!r} ({n['cells']} cells)" for n in unknown), source))
        out.append(Fact(f"{d} is {i.get('species') or 'of unknown species'}, genes as {i['gene_id_type']}; "
                        f"{'already log-normalised, used as is' if i['already_log'] else 'raw counts, normalised then log1p'}",
                        source))
    out.append(Fact(f"genes: {rep['n_genes']} genes are modelled; the inputs share {rep['genes_common']} genes "
                    f"(aligned on {rep['gene_key']} ids); per input: "
                    + ", ".join(f"{i['dataset_id']} {i['genes_in']}" for i in rep["inputs"]), source))
    out.append(Fact(f"the unified data hold {rep['n_cells']} cells, {rep['perturbations']} perturbations and "
                    f"{rep['conditions']} perturbed conditions", source))
    info = rep.get("split_info")
    if info:
        n = info.get("n_cells", {})
        out.append(Fact(f"task {info['task']} (seed {info['seed']}): cells per split "
                        + ", ".join(f"{k} {v}" for k, v in n.items()), source + " (split_info)"))
        unit, held = held_out_units(info)
        for split, units in held.items():
            out.append(Fact(f"held out for {split} (never seen in training): {len(units)} {unit}(s): "
                            f"{', '.join(map(str, units[:30]))}" + (" ..." if len(units) > 30 else ""),
                            source + " (split_info)"))
        train = info.get("train_conditions") or []
        if train:
            out.append(Fact(f"training (seen) perturbations: {len(train)}: {', '.join(map(str, train[:30]))}"
                            + (" ..." if len(train) > 30 else ""), source + " (split_info)"))
    return out


def result_facts(run: RunFolder) -> list[Fact]:
    """Baselines, the search tree and the verdict."""
    out: list[Fact] = []
    base = _json(run.root / "baselines.json")
    if base:
        for b, v in base.get("baselines", {}).items():
            vals = ", ".join(f"{k} {x:.3f}" for k, x in v.items() if isinstance(x, (int, float)))
            out.append(Fact(f"baseline {b} on the test split: {vals}", "baselines.json"))
    tree = _json(run.tree_json)
    if tree:
        for nid, n in tree.get("nodes", {}).items():
            if n.get("action") is None or nid == "root":
                continue
            r = f", reward {n['reward']:.3f}" if n.get("reward") is not None else ""
            m = f", validation metric {n['val_metric']:.3f}" if n.get("val_metric") is not None else ""
            w = f", {n['wall_s']:.0f}s of training" if n.get("wall_s") else ""
            out.append(Fact(f"search node {nid} tried model {n['action']}: status {n.get('status')}{m}{r}{w}",
                            "tree.json"))
    verdict = _json(run.root / "verdict.json")
    if verdict:
        out.append(Fact(f"verdict: {'valid' if verdict.get('valid') else 'not valid'}; "
                        f"{verdict.get('headline', '')}", "verdict.json"))
        for ch in verdict.get("checks") or []:
            out.append(Fact(f"check {ch['name']}: {'passed' if ch['passed'] else 'failed'} ({ch.get('detail', '')})",
                            "verdict.json"))
    return out


def config_facts(run: RunFolder) -> list[Fact]:
    cfg = run.config()
    return [Fact(f"the run: task {cfg.task}, inputs {', '.join(Path(p.path).name for p in cfg.inputs)}, "
                 f"budget {cfg.budget_nodes} node(s), up to {cfg.epochs} epochs per node, seed {cfg.seed}"
                 + (f", excluded {', '.join(cfg.exclude)}" if cfg.exclude else ""), "task.yaml")]


def run_facts(run: RunFolder) -> list[Fact]:
    """The fact sheet of a run folder, as far as the run has got."""
    out = config_facts(run)
    for p in sorted(run.audit_dir.glob("*.json")):
        out += audit_facts(json.loads(p.read_text()), f"audit/{p.name}")
    rep = _json(run.unify_dir / "unify_report.json")
    if rep:
        out += unify_facts(rep)
    return out + result_facts(run)


def file_facts(files: list[str]) -> list[Fact]:
    """Before a run: the audits of the files already named, and what the Unifier will do with them."""
    from harmonycell.tools.data.audit import audit_h5ad, read_obs_var_backed
    from harmonycell.tools.data.mapping import LabelReader, infer_mapping, label_notes
    from harmonycell.tools.errors import HarmonyCellError

    out: list[Fact] = []
    for f in files:
        a = audit_h5ad(Path(f))
        src = f"audit of {Path(f).name}"
        out += audit_facts(a.model_dump(mode="json"), src)
        try:
            obs, var = read_obs_var_backed(Path(f))
            spec = infer_mapping(a, obs, var=var)
            out += plan_facts(a.name, spec, label_notes(spec, obs, LabelReader.for_file(a, var)), src)
        except HarmonyCellError as e:
            out.append(Fact(f"the Unifier cannot map {a.name}: {e.one_line()}", src))
    return out


_WORD = re.compile(r"[a-z0-9][a-z0-9_\-+]*")
STOP = frozenset("the a an of and or in on to is are was were what which how many much did does do for with "
                 "it its this that there be by as at from why who when where i we you they me my our".split())


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOP}


_EMBEDDED: dict[str, np.ndarray] = {}


def retrieve(facts: list[Fact], question: str, k: int = TOP_K) -> list[tuple[float, Fact]]:
    """The facts nearest the question: cosine similarity of MiniLM embeddings, plus a bonus for
    the question's own words (a label, a column or a node id named in it); best first, only those
    that clear MIN_SCORE."""
    from harmonycell.tools.search.knowledge import embed

    if not facts:
        return []
    new = [f.text for f in facts if f.text not in _EMBEDDED]
    if new:  # a run's facts are embedded once per process, not once per question
        _EMBEDDED.update(zip(new, embed(new)))
    q = embed([question])[0]
    sims = np.stack([_EMBEDDED[f.text] for f in facts]) @ q
    asked = _words(question)
    bonus = np.array([0.1 * min(3, len(asked & _words(f.text))) for f in facts])
    score = sims + bonus
    order = np.argsort(-score)[:k]
    return [(float(score[i]), facts[i]) for i in order if score[i] >= MIN_SCORE]


def answer_from(facts: list[Fact], question: str) -> tuple[str, list[str]]:
    """(answer text, records cited); says so plainly when nothing in the records is about it."""
    hits = retrieve(facts, question)
    if not hits:
        return ("I found nothing in this run's records about that (they hold the audit, the mapping, the split, "
                "the genes, the baselines, the search tree and the verdict).", [])
    best = hits[0][0]
    kept = [f for s, f in hits if s >= best - 0.15]
    sources = list(dict.fromkeys(f.source for f in kept))
    return "\n".join(f"- {f.text} [{f.source}]" for f in kept), sources
