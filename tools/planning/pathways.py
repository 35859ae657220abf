"""Gene sets (pathways) mapped onto the task's genes, for coverage-aware acquisition.

The file format (GMT ``name<TAB>description<TAB>gene...`` or JSON ``{name: [genes]}``) is read
by the one gene-set reader the pathway-masked backbone uses (``codegen.read_gene_sets``).
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel

from harmonycell.tools.errors import InputError
from harmonycell.tools.search.codegen import read_gene_sets


class Pathways(BaseModel):
    source: str
    members: dict[str, list[int]]  # pathway -> columns of its genes among the task's genes
    n_sets_read: int

    def of(self, column: int) -> list[str]:
        return [p for p, cols in self.members.items() if column in cols]

    def memberships(self, columns: list[int]) -> list[list[str]]:
        index: dict[int, list[str]] = {}
        for p, cols in self.members.items():
            for c in cols:
                index.setdefault(c, []).append(p)
        return [index.get(c, []) for c in columns]


def load_pathways(path: Path, lookup: dict[str, int]) -> Pathways:
    """Read a gene-set file; keep the sets with at least one of the task's genes."""
    path = Path(path)
    if not path.is_file():
        raise InputError("gene-set file not found", where=str(path),
                         fix="give a .gmt (name<TAB>description<TAB>genes...) or .json gene-set file")
    sets = read_gene_sets(path)
    members = {}
    for name, genes in sets.items():
        cols = sorted({lookup[g.upper()] for g in genes if g.upper() in lookup})
        if cols:
            members[name] = cols
    if not members:
        raise InputError(f"none of the {len(sets)} gene sets names a gene this run measures",
                         where=str(path), fix="check the identifiers (symbols or Ensembl ids) match the data")
    return Pathways(source=str(path), members=members, n_sets_read=len(sets))


def default_cap(budget: int, n_pathways: int) -> int:
    """Picks one pathway may take in a plan: an even share of the budget, at least one."""
    return max(1, math.ceil(budget / max(n_pathways, 1)))
