"""Deterministic harmonisation of names across inputs: perturbation labels and cell types.

Rules (documented here, reported for every merge):
- Perturbation labels: two single perturbations whose names differ only by letter case
  (``klf1`` / ``KLF1``) are one perturbation. When most labels without a twin are upper case
  (human symbols) the upper-case twin wins; otherwise the spelling carried by the most cells (ties:
  upper case). Combinations are re-sorted.
- Cell types: two names with the same *key* are one cell type. The key is the name lower-cased,
  with the words ``cell``/``cells`` dropped, plurals made singular, spaces and ``_-.`` removed and
  the synonyms in CELL_SYNONYMS applied (``CD4 T cells`` / ``CD4T`` -> ``cd4t``; ``CD14+ Monocytes``
  / ``CD14+Mono`` -> ``cd14+mono``; ``B cells`` / ``B`` -> ``b``). The spelling carried by the most
  cells wins. Nothing else is merged: no fuzzy matching, no ontology guesses.
"""

from __future__ import annotations

import re

import pandas as pd

from harmonycell.tools.schema import CONTROL_LABEL, canonical_condition, split_condition

CELL_SYNONYMS = {  # token -> canonical token (applied after singularising)
    "monocyte": "mono", "macrophage": "macro", "lymphocyte": "lympho", "dendritic": "dc",
    "natural killer": "nk", "killer": "nk", "tcell": "t", "bcell": "b", "nkcell": "nk",
}


def pick(spellings: pd.Series, prefer_upper: bool = False) -> str:
    """The spelling with the most cells (first the upper-case one when ``prefer_upper``); ties go
    to the upper-case one, then alphabetical."""
    ranked = sorted(spellings.items(), key=lambda kv: (prefer_upper and kv[0] != kv[0].upper(), -kv[1],
                                                       kv[0] != kv[0].upper(), kv[0]))
    return ranked[0][0]


def fold_label_case(cond: pd.Series) -> tuple[pd.Series, dict[str, str]]:
    """Condition names with case-only variants of a perturbation merged; and {variant: kept}."""
    counts: dict[str, int] = {}
    per_label = cond.astype(str).value_counts()
    for label, n in per_label.items():
        for p in split_condition(label):
            counts[p] = counts.get(p, 0) + int(n)
    by_key: dict[str, dict[str, int]] = {}
    for p, n in counts.items():
        by_key.setdefault(p.upper(), {})[p] = n
    # the labels' own convention: mostly upper case (human symbols) -> the upper-case twin wins
    unique = [k for k, v in by_key.items() if len(v) == 1]
    upper_style = sum(next(iter(by_key[k])) == k for k in unique) >= 0.5 * max(len(unique), 1)
    mapping = {}
    for variants in by_key.values():
        if len(variants) > 1:
            keep = pick(pd.Series(variants), prefer_upper=upper_style)
            mapping.update({v: keep for v in variants if v != keep})
    if not mapping:
        return cond, {}
    relabel = {lab: (lab if lab == CONTROL_LABEL else canonical_condition([mapping.get(p, p) for p in split_condition(lab)]))
               for lab in per_label.index}
    return cond.astype(str).map(relabel), mapping


def cell_type_key(name: str) -> str:
    t = str(name).lower()
    t = re.sub(r"\bcells?\b", " ", t)
    words = [re.sub(r"(?<=[a-z]{3})s$", "", w) for w in re.split(r"[\s_\-\.]+", t) if w]
    t = " ".join(CELL_SYNONYMS.get(w, w) for w in words)
    for k, v in CELL_SYNONYMS.items():
        t = re.sub(rf"\b{k}\b", v, t)
    return re.sub(r"[\s_\-\.]+", "", t)


def harmonise_cell_types(cell_type: pd.Series) -> tuple[pd.Series, dict[str, str]]:
    """Cell types with same-key names merged (module docstring); and {variant: kept}."""
    counts = cell_type.astype(str).value_counts()
    by_key: dict[str, dict[str, int]] = {}
    for name, n in counts.items():
        key = cell_type_key(name) or name
        by_key.setdefault(key, {})[name] = int(n)
    mapping = {}
    for variants in by_key.values():
        if len(variants) > 1:
            keep = pick(pd.Series(variants))
            mapping.update({v: keep for v in variants if v != keep})
    if not mapping:
        return cell_type, {}
    return cell_type.astype(str).map(lambda v: mapping.get(v, v)), mapping
