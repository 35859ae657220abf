"""Perturbation labels read by their words: tokens and gene knowledge, not whole-string matches.

A screen writes its labels in its own convention (``NonTargetingHuman_g07``, ``sgJAK2-2``,
``AAVS1_sg3``, ``LacZ``, ``vehicle (DMSO)``). A label is split into tokens (separators, CamelCase,
guide and replicate suffixes), and decided from the tokens:
- a *negative control* when its content words belong to one control class (non-targeting,
  scrambled, safe-harbour, reporter, empty vector, vehicle, untreated) -- the classes are the
  ways screens build negative controls, each a small set of words, not a list of labels;
- a *target* when its stem (the label less guide/replicate decoration and species words) is a
  gene of the organism: the gene database (aliases resolved) or the file's own gene names;
  guide-level labels (``JAK2_g1``, ``JAK2_g2``) pool to their gene, with the guides counted;
- *unknown* otherwise (a drug, a cytokine, a reporter-free oddity): the caller decides.
Every decision carries the tokens and the rule that made it, for the unify report.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, Mapping

Kind = Literal["control", "target", "unknown"]

# Control classes: content words (lower case, after tokenising) that make a negative control.
# A phrase counts when every content word is of one class (or generic control words).
CONTROL_CLASSES: dict[str, frozenset[str]] = {
    "non-targeting": frozenset({"nontargeting", "nontarget", "nt", "ntc", "ntg", "nc", "negctrl", "negative",
                                "neg", "notarget", "targetless"}),
    "scrambled": frozenset({"scrambled", "scramble", "scr", "scrmbl", "shuffled"}),
    "safe-harbour": frozenset({"aavs1", "aavs", "rosa26", "rosa", "h11", "hipp11", "safeharbour", "safeharbor",
                               "safetargeting", "intergenic", "safe", "harbour", "harbor"}),
    "reporter": frozenset({"lacz", "gfp", "egfp", "rfp", "bfp", "yfp", "cfp", "mcherry", "tdtomato", "luciferase",
                           "luc", "fluc", "rluc", "gluc", "nluc", "renilla", "firefly", "lucif"}),
    # ("no guide" is not here: it means no guide was detected in the cell, an unknown label)
    "empty-vector": frozenset({"empty", "emptyvector", "ev", "vector", "backbone", "noinsert", "plko",
                               "lentiguide", "pcdna"}),
    "vehicle": frozenset({"vehicle", "veh", "dmso", "pbs", "etoh", "ethanol", "water", "h2o", "solvent", "saline",
                          "media", "medium"}),
    "untreated": frozenset({"untreated", "untr", "mock", "naive", "baseline", "notreatment", "unexposed",
                            "uninfected", "wt", "wildtype", "parental"}),
    "unstimulated": frozenset({"unstimulated", "unstim", "unst", "resting", "nostim"}),
}
# what a control class says about the perturbations beside it (None: nothing)
PERT_TYPE_OF_CLASS: dict[str, str | None] = {
    "non-targeting": "crispr", "scrambled": "crispr", "safe-harbour": "crispr", "reporter": "crispr",
    "empty-vector": "crispr", "vehicle": "drug", "untreated": None, "unstimulated": "cytokine", "generic": None}
# Labels that mean "perturbation unknown" (no guide detected, a doublet): neither control nor
# perturbed, the cells are dropped; never proposed as a control.
UNKNOWN_LABELS = frozenset({"", "nan", "na", "n/a", "none", "null", "unknown", "unassigned", "no guide", "no_guide",
                            "noguide", "multiplet", "doublet", "undetermined", "?", "-"})
# Words that say "control" without saying which kind: they join any class, and alone make one.
GENERIC_CONTROL = frozenset({"control", "ctrl", "ctl", "cntrl", "ctrls", "controls", "con"})
# Decoration: guide/replicate words, species, vector words that never decide a label.
DECORATION = frozenset({"g", "sg", "sgrna", "grna", "guide", "guides", "rna", "sh", "shrna", "si", "sirna",
                        "crispr", "crispri", "crispra", "oligo", "rep", "replicate", "r", "v", "no", "n",
                        "human", "mouse", "hs", "mm", "hsa", "mmu", "homo", "sapiens", "mus", "musculus",
                        "targeting", "cells", "cell", "treated", "treatment", "with", "only", "and", "in",
                        "the", "of", "condition", "group", "sample", "pool", "library", "lib"})
# pairs of tokens that form one control word once joined ("non targeting", "safe harbour")
_JOIN = {("non", "targeting"): "nontargeting", ("non", "target"): "nontarget", ("neg", "ctrl"): "negctrl",
         ("safe", "harbour"): "safeharbour", ("safe", "harbor"): "safeharbor", ("safe", "targeting"): "safetargeting",
         ("empty", "vector"): "emptyvector", ("no", "treatment"): "notreatment",
         ("no", "insert"): "noinsert", ("wild", "type"): "wildtype",
         ("no", "target"): "notarget", ("un", "treated"): "untreated", ("no", "stim"): "nostim",
         ("un", "stimulated"): "unstimulated", ("et", "oh"): "etoh"}
_SEP = re.compile(r"[\s_\-\.\(\)\[\]/#:,;|=+]+")
_GUIDE_PREFIX = re.compile(r"^(sg|sh|si|g|crispr)(?=[A-Z0-9])")
_NUMBERED = re.compile(r"^([a-z]+?)(\d+)$")


def tokens(label: str, camel: bool = True) -> list[str]:
    """Lower-case tokens: split at separators and (``camel``) CamelCase boundaries
    (``NonTargetingHuman`` -> non, targeting, human; ``NTCGuide`` -> ntc, guide), never between
    letters and digits inside a word (``NT5E``, ``MAP3K21`` stay whole)."""
    s = str(label)
    if camel:
        s = re.sub(r"([a-z])([A-Z])", r"\1 \2", s)
        s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", s)
    return [t for t in _SEP.split(s.lower()) if t]


def _content(toks: list[str], unfold_numbered: bool) -> list[str]:
    """Tokens that can decide a label: joined pairs, numbering and decoration out; with
    ``unfold_numbered``, a control word written with its number (``ctrl0``, ``ntc3``) too."""
    out: list[str] = []
    i = 0
    while i < len(toks):
        if i + 1 < len(toks) and (toks[i], toks[i + 1]) in _JOIN:
            out.append(_JOIN[(toks[i], toks[i + 1])])
            i += 2
            continue
        t = toks[i]
        i += 1
        if re.fullmatch(r"(g|sg|sgrna|grna|guide|rep|r|v|n|no|s)?\d+[a-z]?|\d+(%|pct|percent|[munpµ]?m|[muµ]?l|x|h|hrs?|min|d)", t):
            continue  # guide / replicate numbering, a vehicle's concentration or time
        m = _NUMBERED.match(t)
        if m and m.group(1) in DECORATION:  # mouse1, guide07
            continue
        if unfold_numbered:  # ctrl0, ntc3, and a guide number glued on: NTg7, ntcsg2
            glued = re.match(r"^([a-z]+?)(?:sg|g)?\d+$", t)
            if glued and glued.group(1) in _ALL_CONTROL_WORDS:
                t = glued.group(1)
        if t not in DECORATION:
            out.append(t)
    return out


_ALL_CONTROL_WORDS = frozenset().union(*CONTROL_CLASSES.values(), GENERIC_CONTROL)


_PIECES = frozenset(w for w in _ALL_CONTROL_WORDS | DECORATION | {a for pair in _JOIN for a in pair} if len(w) >= 2)
_NUMBER_PIECE = re.compile(r"(?:sg|g)?\d+")


def segment(tok: str) -> list[str]:
    """A token glued from known words (``sgscrambled`` -> sg, scrambled; ``nontargetctrlhs`` ->
    non, target, ctrl, hs), fewest pieces first; the token itself when it is no such glue."""
    n = len(tok)
    best: list[list[str] | None] = [None] * (n + 1)
    best[0] = []
    for i in range(n):
        if best[i] is None:
            continue
        for j in range(i + 2, n + 1):
            piece = tok[i:j]
            if piece in _PIECES or _NUMBER_PIECE.fullmatch(piece):
                cand = best[i] + [piece]
                if best[j] is None or len(cand) < len(best[j]):
                    best[j] = cand
    return best[n] if best[n] and len(best[n]) > 1 else [tok]


@dataclass(frozen=True)
class LabelDecision:
    label: str
    kind: Kind
    rule: str  # the rule that decided, in words
    tokens: tuple[str, ...]
    control_class: str | None = None  # for a control
    gene: str | None = None  # for a target: the gene symbol it pools to
    guide: str | None = None  # for a target written per guide: the guide's own suffix


def _control_class(content: list[str]) -> str | None:
    if not content or not all(c in _ALL_CONTROL_WORDS for c in content):
        return None
    # several classes in one label (a reporter guide in a safe harbour): the first listed names it
    return next((k for k, words in CONTROL_CLASSES.items() if any(c in words for c in content)), "generic")


def gene_stem(label: str) -> tuple[str, str | None] | None:
    """(stem, guide suffix) of a label that may name a gene through a guide: ``sgJAK2-2`` ->
    (JAK2, 2), ``JAK2_g1`` -> (JAK2, g1), ``JAK2.sg3`` -> (JAK2, sg3); None for a phrase of
    several words."""
    s = str(label).strip()
    s = re.sub(r"\s*\(.*\)\s*$", "", s)
    s = _GUIDE_PREFIX.sub("", s)
    m = re.match(r"^([A-Za-z][A-Za-z0-9\-\.]*?[A-Za-z0-9])(?:[_\-\.#\s]+((?i:(?:sgrna|grna|guide|shrna|sirna|sg|sh|si|"
                 r"g|rep|r|v|s)[_\-\.]?)?\d+[a-z]?|[a-d]))?$", s)
    glued = re.match(r"^([A-Z][A-Z0-9\-]*[A-Z0-9])(g\d+)$", s)  # CUL3g1 (a mouse Rag1 stays whole)
    if glued and (not m or m.group(2) is None):
        return glued.group(1), glued.group(2)
    if not m:
        return None
    return m.group(1), m.group(2)


def is_unknown_label(label) -> bool:
    """A label that says the cell's perturbation is unknown (NaN, 'no guide', 'doublet')."""
    return re.sub(r"\s+", " ", str(label).strip().lower()) in UNKNOWN_LABELS


def decide(label: str, is_gene: Callable[[str], str | None]) -> LabelDecision:
    """Decide one label. ``is_gene(name)`` returns the gene symbol ``name`` stands for, or None."""
    parts = [p for p in re.split(r"\s*[+;]\s*", str(label)) if p.strip()]
    if len(parts) > 1:  # a combination (A+ctrl, A;B): a control only when every part is one
        each = [decide(p, is_gene) for p in parts]
        toks = tuple(t for d in each for t in d.tokens)
        if all(d.kind == "control" for d in each):
            return LabelDecision(label, "control", "every part of the combination is a control", toks,
                                 control_class=each[0].control_class)
        return LabelDecision(label, "unknown", "a combination: its parts are decided one by one", toks)
    toks = tuple(tokens(label))
    content = _content(list(toks), unfold_numbered=False)
    # a word CamelCase would cut (LacZ, pLKO) is read whole as well
    for words in (content, _content(tokens(label, camel=False), unfold_numbered=False)):
        if (cls := _control_class(words)) is not None:
            return LabelDecision(label, "control", f"every content word ({' + '.join(words)}) is a "
                                                   f"control word of class {cls}", toks, control_class=cls)
    stem = gene_stem(label)
    if stem is not None and stem[1] is not None and is_gene(str(label).strip()) is not None:
        stem = (str(label).strip(), None)  # a gene whose name only looks suffixed (HLA-A, NKX2-1)
    if stem is not None:
        gene = is_gene(stem[0])
        if gene is not None:
            how = "its own gene" if gene == stem[0] else f"gene {gene} (written {stem[0]!r})"
            rule = f"stem {stem[0]!r} is {how}" + (f"; guide suffix {stem[1]!r}" if stem[1] else "")
            return LabelDecision(label, "target", rule, toks, gene=gene, guide=stem[1])
    # only now a numbered control word (ctrl0, ntc3): WT1 or NC1 as a gene came first
    for whole in (list(toks), tokens(label, camel=False)):
        # last (genes came first): words glued without case or separator (sgscrambled, nontargetctrlhs)
        whole = [w for t in whole for w in segment(t)]
        numbered = _content(whole, unfold_numbered=True)
        if (cls := _control_class(numbered)) is not None:
            return LabelDecision(label, "control", f"every content word ({' + '.join(numbered)}) is a numbered "
                                                   f"control word of class {cls}", toks, control_class=cls)
    if not content:
        return LabelDecision(label, "unknown", "only decoration words (no content)", toks)
    return LabelDecision(label, "unknown", "neither a control phrase nor a gene of the organism", toks)


@dataclass
class LabelReading:
    """Every label of a column decided, with what follows from it."""

    decisions: dict[str, LabelDecision]
    counts: Mapping[str, int]
    guides_per_gene: dict[str, int] = field(default_factory=dict)
    proposed_control: str | None = None  # set when no label is a known control
    proposal_reason: str | None = None

    @property
    def controls(self) -> list[str]:
        return [lab for lab, d in self.decisions.items() if d.kind == "control"]

    @property
    def targets(self) -> dict[str, str]:
        """label -> gene, guide-level labels pooled to their gene."""
        return {lab: d.gene for lab, d in self.decisions.items() if d.kind == "target" and d.gene}


def gene_lookup(var_names: Iterable[str] = (), db=None) -> Callable[[str], str | None]:
    """``is_gene`` for :func:`decide`: the file's own gene names (case-insensitive), then the gene
    database (symbols, aliases, Ensembl ids; None where it is not installed)."""
    own = {str(v).upper(): str(v) for v in var_names}

    def is_gene(name: str) -> str | None:
        if name.upper() in own:
            return own[name.upper()]
        if db is not None:
            r = db.resolve_one(name)
            return r.symbol
        return None

    return is_gene


def read_labels(counts: Mapping[str, int], is_gene: Callable[[str], str | None]) -> LabelReading:
    """Decide every label of a column (``counts``: label -> number of cells); when none is a
    control, propose the most frequent label that is not a gene, and say so."""
    decisions = {lab: decide(lab, is_gene) for lab in counts}
    guides = Counter(d.gene for d in decisions.values() if d.kind == "target" and d.gene)
    reading = LabelReading(decisions, counts, dict(guides))
    if not reading.controls:
        unknown = sorted((lab for lab, d in decisions.items()
                          if d.kind == "unknown" and not is_unknown_label(lab) and d.tokens),
                         key=lambda lab: (-counts[lab], lab))
        if unknown:
            top = unknown[0]
            share = counts[top] / max(1, sum(counts.values()))
            reading.proposed_control = top
            reading.proposal_reason = (
                f"no label is a known negative control; {top!r} is the most frequent label that is not a "
                f"gene of the organism ({counts[top]} cells, {share:.0%}); name the control with "
                f"--control LABEL if it is not")
    return reading
