"""The genes a next experiment could perturb.

By default: every gene the task measures (its ``var``) that no condition of the data perturbed,
alone or in a combination, in any split. A user's list is checked against the measured genes
(symbols or ids, case-insensitive); genes the data do not measure cannot be embedded, so they
are an error that names them.
"""

from __future__ import annotations

import re
from pathlib import Path

from anndata import AnnData
from pydantic import BaseModel, Field

from harmonycell.tools.errors import InputError
from harmonycell.tools.evaluation.pseudobulk import gene_lookup, measured_genes
from harmonycell.tools.schema import VAR_SYMBOL

DEFAULT_SOURCE = "measured genes that no condition perturbed"


class CandidateSet(BaseModel):
    genes: list[str]  # display names (symbols where the data have them)
    columns: list[int]  # the genes' columns in the task's gene order
    source: str
    already_perturbed: list[str] = Field(default_factory=list)  # user-listed genes already measured


def gene_names(adata: AnnData) -> list[str]:
    if VAR_SYMBOL in adata.var:
        return [str(s) for s in adata.var[VAR_SYMBOL]]
    return [str(g) for g in adata.var_names]


def perturbed_columns(adata: AnnData) -> set[int]:
    """Columns of the measured genes that some condition (any split) perturbed."""
    lookup = gene_lookup(adata)
    conditions = adata.obs["condition_name"].astype(str).unique()
    return {g for c in conditions for g in measured_genes(c, lookup)}


def default_candidates(adata: AnnData) -> CandidateSet:
    done = perturbed_columns(adata)
    names = gene_names(adata)
    cols = [i for i in range(adata.n_vars) if i not in done]
    if not cols:
        raise InputError("every measured gene has already been perturbed: no candidate left",
                         fix="pass a list of genes with --candidates")
    return CandidateSet(genes=[names[i] for i in cols], columns=cols, source=DEFAULT_SOURCE)


def read_candidate_file(path: Path) -> list[str]:
    """Gene names separated by newlines, commas, tabs or spaces; ``#`` starts a comment."""
    path = Path(path)
    if not path.is_file():
        raise InputError("candidate file not found", where=str(path),
                         fix="give a text file with one gene name per line")
    names: list[str] = []
    for line in path.read_text().splitlines():
        names += [t for t in re.split(r"[,\s]+", line.split("#", 1)[0]) if t]
    if not names:
        raise InputError("no gene names in the candidate file", where=str(path),
                         fix="give one gene name per line")
    return list(dict.fromkeys(names))  # keep order, drop repeats


def resolve_candidates(names: list[str], adata: AnnData, source: str) -> CandidateSet:
    lookup = gene_lookup(adata)
    unknown = [n for n in names if n.upper() not in lookup]
    if unknown:
        shown = ", ".join(unknown[:20]) + (f" (and {len(unknown) - 20} more)" if len(unknown) > 20 else "")
        raise InputError(f"{len(unknown)} candidate gene(s) are not measured by this run's data: {shown}",
                         where=source,
                         fix="list genes among the task's measured genes (symbols or ids); "
                             "unmeasured genes have no expression-derived embedding")
    display = gene_names(adata)
    cols = list(dict.fromkeys(lookup[n.upper()] for n in names))
    done = perturbed_columns(adata)
    return CandidateSet(genes=[display[c] for c in cols], columns=cols, source=source,
                        already_perturbed=[display[c] for c in cols if c in done])
