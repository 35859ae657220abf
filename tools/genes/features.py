"""Gene features from gene knowledge: a GO-graph embedding and pathway membership.

A model meets a never-perturbed gene only through features; the expression-PCA loadings of the
training data say how a gene co-varies, these say what the gene *does*. The GO embedding is a
truncated SVD of the TF-IDF-weighted gene x GO-term matrix (terms with every ancestor, so genes
in related processes share terms): genes with similar annotations (GEARS' gene-similarity graph)
get nearby vectors. It depends on the database only, so it is computed once per database and
parameters and cached beside the database's own folder in the user's cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from harmonycell.tools.genes.db import GO_ASPECTS, GeneDB
from harmonycell.tools.record import atomic

EMBED_DIM = 64
MIN_TERM_GENES = 3  # a term on fewer genes links nobody
MAX_TERM_SHARE = 0.05  # a term on more than 5% of genes (e.g. "protein binding") says little


@dataclass
class GeneEmbedding:
    genes: list[str]
    vectors: np.ndarray  # (genes, dim), rows L2-normalised; a gene without annotations is absent
    source: str  # what the vectors were computed from, for the run's record
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._index = {g: i for i, g in enumerate(self.genes)}

    def __contains__(self, gene: str) -> bool:
        return gene in self._index

    def get(self, gene: str) -> np.ndarray | None:
        i = self._index.get(gene)
        return None if i is None else self.vectors[i]

    def matrix(self, genes: list[str]) -> tuple[np.ndarray, list[str]]:
        """(len(genes), dim) with zero rows for unknown genes, and the list of those unknown."""
        out = np.zeros((len(genes), self.vectors.shape[1]), dtype=np.float32)
        missing = []
        for r, g in enumerate(genes):
            i = self._index.get(g)
            if i is None:
                missing.append(g)
            else:
                out[r] = self.vectors[i]
        return out, missing

    def nearest(self, gene: str, among: list[str], k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` genes of ``among`` most similar (cosine) to ``gene``; [] when it is unknown."""
        v = self.get(gene)
        cands = [g for g in among if g in self._index and g != gene]
        if v is None or not cands:
            return []
        sims = self.vectors[[self._index[g] for g in cands]] @ v
        order = np.argsort(-sims, kind="stable")[:k]
        return [(cands[i], float(sims[i])) for i in order]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "harmonycell" / "genes"


def _key(db: GeneDB, tables: tuple[str, ...], dim: int) -> str:
    st = db.path.stat()
    text = f"{db.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{tables}|{dim}|{MIN_TERM_GENES}|{MAX_TERM_SHARE}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compute_embedding(db: GeneDB, tables: tuple[str, ...], dim: int = EMBED_DIM) -> GeneEmbedding:
    genes, terms, pairs = db.annotation_matrix(tables)
    rows, cols = (np.array(x, dtype=np.int64) for x in zip(*pairs))
    A = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(genes), len(terms)))
    df = np.asarray(A.sum(axis=0)).ravel()
    keep = (df >= MIN_TERM_GENES) & (df <= MAX_TERM_SHARE * len(genes))
    A = A[:, keep] @ sp.diags(np.log(len(genes) / df[keep]).astype(np.float32))
    k = min(dim, min(A.shape) - 1)
    # a fixed start vector: svds is otherwise seeded at random and the signs of vectors could flip
    u, s, _ = svds(A.astype(np.float64), k=k, v0=np.ones(min(A.shape)) / np.sqrt(min(A.shape)))
    vec = u[:, ::-1] * s[::-1]
    norm = np.linalg.norm(vec, axis=1)
    known = norm > 0
    vec = (vec[known] / norm[known, None]).astype(np.float32)
    kept = [g for g, ok in zip(genes, known) if ok]
    return GeneEmbedding(kept, vec, source=f"org.Hs.eg.db {db.version.get('GOSOURCEDATE', '?')}: "
                                           f"TF-IDF SVD-{k} of {'+'.join(tables)}")


def go_embedding(db: GeneDB, dim: int = EMBED_DIM, aspects: tuple[str, ...] = GO_ASPECTS) -> GeneEmbedding:
    """The GO-graph embedding of every annotated human gene (cached per database and parameters)."""
    tables = tuple(f"go_{a}_all" for a in aspects)
    path = _cache_dir() / f"go-{_key(db, tables, dim)}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return GeneEmbedding(list(z["genes"]), z["vectors"], str(z["source"]))
    emb = compute_embedding(db, tables, dim)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_with(path, lambda tmp: _save(tmp, emb))
    return emb


def _save(path: Path, emb: GeneEmbedding) -> None:
    with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a bare path
        np.savez(fh, genes=np.array(emb.genes), vectors=emb.vectors, source=np.array(emb.source))


def pathway_membership(db: GeneDB, genes: list[str]) -> tuple[np.ndarray, list[str]]:
    """(len(genes), pathways) multi-hot KEGG membership, and the pathway ids (columns)."""
    member = db.kegg_pathways(genes)
    paths = sorted(set().union(*member.values())) if member else []
    col = {p: j for j, p in enumerate(paths)}
    out = np.zeros((len(genes), len(paths)), dtype=np.float32)
    for r, g in enumerate(genes):
        for p in member.get(g, ()):
            out[r, col[p]] = 1.0
    return out, paths


@dataclass
class KnowledgeFeatures:
    """Gene-knowledge features of a perturbation vocabulary, and what could not be featurised."""

    matrix: np.ndarray  # (vocabulary, dim); a zero row where the gene is unknown
    source: str
    symbols: dict[str, str]  # vocabulary entry -> the current symbol it was read as
    unknown: list[str]  # entries the database does not know (a drug, a reporter, a non-human gene)


def knowledge_features(vocab: list[str], db: GeneDB | None = None) -> KnowledgeFeatures:
    """GO-embedding rows for the perturbations of ``vocab`` that are human genes (names resolved
    through aliases and Ensembl ids first); unknown entries keep a zero row and are listed, so a
    model falls back to its data features for them."""
    own = db is None
    db = GeneDB() if own else db
    try:
        emb = go_embedding(db)
        res = db.resolve(vocab)
        symbols = {v: r.symbol for v, r in res.items() if r.symbol is not None and r.symbol in emb}
        rows = [symbols.get(v, "") for v in vocab]
        matrix, _ = emb.matrix(rows)
        return KnowledgeFeatures(matrix, emb.source, symbols, [v for v in vocab if v not in symbols])
    finally:
        if own:
            db.close()
