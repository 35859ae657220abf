"""Gene names to current symbols, for the Unifier: one rule, every rename reported.

Two files of one study can name a gene differently (an old alias, an Ensembl id where the other
has a symbol), and a perturbation label written as an alias would not match its own measured
gene. With the gene database installed, the Unifier reads every gene name through it:

- a name the database reads as exactly one current symbol (an alias, or an Ensembl id where the
  file carries no symbol) becomes that symbol;
- an alias naming several genes is left as written (never guessed) and listed as ambiguous;
- a rename that would give a second row of a file a symbol it already has (two names of one
  gene, or the alias beside its own symbol) is not made, and listed as a collision;
- mitochondrial-genome genes (``MT-`` prefix) are left as written: NCBI, and so the database,
  names them differently (``COX2`` for ``MT-CO2``) while ``MT-CO2`` is an alias of a pseudogene;
- perturbation labels are renamed only for genetic perturbations (pert_type ``crispr``): a drug
  or cytokine name that happens to be a gene alias is not a gene;
- the database is human only: inputs of another species are left as they are.

Without the database nothing is renamed and the report says why.
"""

from __future__ import annotations

import pandas as pd
from pydantic import BaseModel, Field, computed_field

from harmonycell.tools.genes.db import GeneDB, GeneKnowledgeMissing

MITO_PREFIX = "MT-"
GENETIC_PERT_TYPES = ("crispr",)


class GeneRenames(BaseModel):
    """What the Unifier did to gene names (``unify_report.json`` -> ``gene_names``)."""

    database: dict[str, str] = Field(default_factory=dict)  # GeneDB.version; empty when absent
    note: str = ""  # why nothing was renamed (no database, not human); empty when it ran
    var: dict[str, dict[str, str]] = Field(default_factory=dict)  # dataset_id -> {as written: symbol}
    labels: dict[str, str] = Field(default_factory=dict)  # perturbation as written -> symbol
    ambiguous: dict[str, list[str]] = Field(default_factory=dict)  # left as written: the genes it may name
    collisions: dict[str, str] = Field(default_factory=dict)  # left as written: the symbol already there

    @computed_field
    @property
    def n_var_renamed(self) -> int:
        return sum(len(v) for v in self.var.values())

    @computed_field
    @property
    def n_labels_renamed(self) -> int:
        return len(self.labels)


def open_for_unify() -> tuple[GeneDB | None, str]:
    """The database, or (None, the one-line reason it is absent)."""
    try:
        return GeneDB(), ""
    except GeneKnowledgeMissing as e:
        return None, f"gene names left as written: {e.one_line()}"


def symbol_map(db: GeneDB, names, report: GeneRenames) -> tuple[dict[str, str], dict[str, str]]:
    """({name: current symbol} for the names of one file that change under the module's rules,
    {name: symbol} of the renames not made because of a collision); ambiguous names are added to
    ``report``."""
    present = set(map(str, names))
    wanted: dict[str, str] = {}
    for name, r in db.resolve(present).items():
        if name.upper().startswith(MITO_PREFIX):
            continue
        if r.status == "ambiguous":
            report.ambiguous[name] = list(r.candidates)
        elif r.renamed and r.status in ("alias", "ensembl"):
            wanted[name] = r.symbol
    targets = pd.Series(list(wanted.values())).value_counts()
    out, collide = {}, {}
    for name, sym in wanted.items():
        (collide if sym in present or targets[sym] > 1 else out)[name] = sym
    return out, collide


def rename_labels(db: GeneDB, cond: pd.Series, pert_type: pd.Series, report: GeneRenames,
                  split, join) -> pd.Series:
    """Condition labels of genetic perturbations with each part read as its current symbol.

    Two labels naming one gene (an alias and its symbol) become one: that is the point, so a
    label's target already being in the vocabulary is no collision here. ``split``/``join`` are
    the schema's condition helpers (parts of ``A+B`` and back)."""
    genetic = pert_type.astype(str).isin(GENETIC_PERT_TYPES).to_numpy()
    labels = cond.astype(str)
    other = set(labels[~genetic].unique())
    gen_labels = [lab for lab in labels[genetic].unique() if lab not in other]
    parts = sorted({p for lab in gen_labels for p in split(lab)})
    mapping, same_gene = symbol_map(db, parts, report)
    mapping.update(same_gene)  # among labels the symbol already there is the same gene: merged
    if not mapping:
        return cond
    report.labels.update(mapping)
    relabel = {lab: join([mapping.get(p, p) for p in split(lab)]) for lab in gen_labels
               if any(p in mapping for p in split(lab))}
    return labels.map(lambda lab: relabel.get(lab, lab))


def rename_var(db: GeneDB, dataset_id: str, symbols: pd.Series, report: GeneRenames) -> pd.Series:
    """One file's gene symbols (Ensembl ids where it has none) read as current symbols."""
    mapping, collide = symbol_map(db, symbols.unique(), report)
    report.collisions.update(collide)
    if not mapping:
        return symbols
    report.var[dataset_id] = mapping
    return symbols.map(lambda s: mapping.get(s, s))
