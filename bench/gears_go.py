"""GEARS's gene-ontology inputs, built from the local gene database instead of downloaded.

cell-gears 0.1.2 fetches three files from Harvard Dataverse into its ``data_path`` unless they
are already there (``utils.dataverse_download`` / ``tar_data_download_wrapper`` skip an existing
path):

- ``gene2go_all.pkl``: gene name -> set of GO term ids (read by ``PertData.__init__``);
- ``essential_all_data_pert_genes.pkl``: the genes of its perturbation graph (``set_pert_genes``);
- ``go_essential_all/go_essential_all.csv``: the GO graph's edges ``source,target,importance``,
  where importance is the Jaccard index of the two genes' GO sets, kept above 0.1
  (``utils.get_GO_edge_list``); ``get_similarity_network`` then keeps, per target, the k + 1
  largest (the gene itself, Jaccard 1, plus k neighbours; k = 20 by default).

Here the same files are written from org.Hs.eg.db (``harmonycell.tools.genes.db``): GO terms are
the gene's direct annotations over the three aspects (the database's ``go`` view, like NCBI's
gene2go that GEARS's pickle came from, without ancestors, which would make most genes share
generic terms), for the task's genes and its perturbed genes only. The edge list is already cut
to the k + 1 largest per target, so GEARS's own cut leaves it unchanged. A name the database does
not know, or a gene without GO annotations, is reported and left out: GEARS then treats it as a
gene outside its GO graph, as it would with its own files.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from harmonycell.tools.genes.db import GeneDB
from harmonycell.tools.record import atomic

DATA_DIR = "gears_data"  # the adapter's --gears-data default: <out>/gears_data
GENE2GO = "gene2go_all.pkl"
GENE_LIST = "essential_all_data_pert_genes.pkl"
EDGES = "go_essential_all/go_essential_all.csv"
K_GO = 20  # GEARS's num_similar_genes_go_graph default
MIN_JACCARD = 0.1  # get_GO_edge_list keeps a pair whose Jaccard index is above this


@dataclass
class GoSets:
    """GO terms per gene name, as GEARS will look the name up, and the names left out."""

    gene2go: dict[str, frozenset[str]]  # name as written in the data -> GO ids (never empty)
    unknown: list[str] = field(default_factory=list)  # names the database does not know
    no_go: list[str] = field(default_factory=list)  # known genes without a GO annotation
    renamed: dict[str, str] = field(default_factory=dict)  # name -> the symbol it was looked up as


def go_sets(names: list[str], db: GeneDB) -> GoSets:
    """Direct GO annotations (BP, CC, MF) of each name, resolved through symbols, aliases and
    Ensembl ids; an unknown or ambiguous name is reported, never given terms."""
    res = db.resolve(names)
    symbols, terms, pairs = db.annotation_matrix(["go"])
    by_symbol: dict[str, set[str]] = {}
    for g, t in pairs:
        by_symbol.setdefault(symbols[g], set()).add(terms[t])
    out = GoSets({})
    for name, r in res.items():
        if r.symbol is None:
            out.unknown.append(name)
        elif r.symbol not in by_symbol:
            out.no_go.append(name)
        else:
            out.gene2go[name] = frozenset(by_symbol[r.symbol])
            if r.symbol != name:
                out.renamed[name] = r.symbol
    return out


def go_edges(gene2go: dict[str, frozenset[str]], k: int = K_GO,
             min_jaccard: float = MIN_JACCARD) -> list[tuple[str, str, float]]:
    """GEARS's GO graph: (source, target, Jaccard) for every pair above ``min_jaccard`` (a gene
    with itself included, as GEARS's all-pairs loop does), cut per target to the k + 1 largest;
    ties keep the earlier source in ``gene2go``'s order (pandas ``nlargest(keep='first')``)."""
    genes = list(gene2go)
    if not genes:
        return []
    terms = {t: j for j, t in enumerate(sorted({t for s in gene2go.values() for t in s}))}
    rows = np.repeat(np.arange(len(genes)), [len(gene2go[g]) for g in genes])
    cols = [terms[t] for g in genes for t in sorted(gene2go[g])]
    m = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(genes), len(terms)))
    inter = (m @ m.T).toarray()
    size = np.asarray(m.sum(1)).ravel()
    jac = inter / (size[:, None] + size[None, :] - inter)
    edges = []
    for t in range(len(genes)):
        src = np.flatnonzero(jac[:, t] > min_jaccard)
        # stable sort on -score keeps the earlier source first among ties
        top = src[np.argsort(-jac[src, t], kind="stable")][: k + 1]
        edges += [(genes[s], genes[t], float(jac[s, t])) for s in top]
    return edges


def write_gears_files(genes: list[str], perts: list[str], out: Path, db: GeneDB, k: int = K_GO) -> dict:
    """The three files GEARS would download, in ``out``, for a task's measured genes and its
    perturbed genes; returns what was built (also in ``out/go_source.json``)."""
    names = list(dict.fromkeys([*map(str, genes), *map(str, perts)]))
    sets = go_sets(names, db)
    edges = go_edges(sets.gene2go, k)
    out = Path(out)
    (out / EDGES).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out / GENE2GO, pickle.dumps({g: set(s) for g, s in sets.gene2go.items()}))
    atomic.write_bytes(out / GENE_LIST, pickle.dumps(names))
    atomic.write_text(out / EDGES, "source,target,importance\n" + "".join(f"{s},{t},{w!r}\n" for s, t, w in edges))
    info = {"source": "org.Hs.eg.db direct GO annotations (BP, CC, MF)", "version": db.version,
            "genes": len(names), "with_go": len(sets.gene2go), "edges": len(edges), "k": k,
            "min_jaccard": MIN_JACCARD, "unknown": sets.unknown, "no_go": sets.no_go,
            "perts_not_in_go": [p for p in perts if str(p) not in sets.gene2go], "renamed": sets.renamed}
    atomic.write_json(out / "go_source.json", info)
    return info


def write_for_sandbox(data: Path, out: Path) -> dict:
    """GEARS's files for a sandbox folder (its meta's genes and perturbations), in
    ``out/gears_data``, where the GEARS adapter points GEARS's data path."""
    meta = json.loads((Path(data) / "meta.json").read_text())
    with GeneDB() as db:
        return write_gears_files(meta["genes"], meta["perts"], Path(out) / DATA_DIR, db)
