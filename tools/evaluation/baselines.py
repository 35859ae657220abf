"""Baselines every result stands beside (SPEC section 7), on the same split, queries and genes.

All baselines predict ``y^_q = y_ctrl[q] + delta^_q`` where ``y_ctrl[q]`` is the control mean of
the query's context over all its control cells (as in ``pseudobulk.Targets``), and are fitted on
training cells only:

- ``control_mean``: ``delta^ = 0``. Correlations are undefined (null); its RMSE is the RMS of
  the true effect, the floor any model must beat.
- ``train_mean``: ``delta^`` = mean over training perturbations q of the context of
  ``y_q(train) - y_ctrl`` (perturbation-weighted). A context with no training perturbation
  (unseen cell context) uses the mean over all training (perturbation, context) pairs. Its
  DeltaPCC is the shared-shift artefact (SPEC: 0.49-0.56 on Norman, 0.70-0.74 on Adamson).
- ``linear``: Ahlmann-Eltze et al. (Nature Methods 2025). With D the genes x perturbations
  matrix of training deltas of the context, b its row means, G the top K = 10 principal
  components of D (left singular vectors of D - b), and P the perturbations' embeddings: the
  perturbed gene's row of the top principal components of the training pseudo-bulk over *all*
  genes the input measures (``tools.data.genes.perturbation_embedding``, computed before gene
  selection and stored in ``uns``; summed over the genes of a combination):
  ``W = (G'G + lambda I)^-1 G' (D - b) P (P'P + lambda I)^-1``, lambda = 0.1, and
  ``delta^_q = G W p_q + b``. A context with fewer than two training perturbations on measured
  genes is fitted on all contexts' deltas pooled. A query none of whose perturbations is a
  measured gene (a drug, a cytokine, an unmeasured gene) falls back to ``train_mean``; each such
  query is listed in ``fallbacks`` with the reason.
- ``linear_go`` (linear on gene knowledge): the same model with P the perturbed genes' GO
  embedding (``tools.genes.features``: TF-IDF SVD-64 of org.Hs.eg.db's GO annotations, names read
  through aliases; summed over a combination's genes), so a gene is known by what it does, not
  by how it co-varies in the training data. A query with a gene the database does not know
  falls back to the ``linear`` prediction (the data features), each such query listed in
  ``fallbacks``. Reported only when the database is installed and knows at least one held-out
  query's genes; otherwise it would repeat ``linear``, and ``omitted`` says why.
- ``noise_ceiling`` (``ceiling.py``): not a baseline but the positive control, a split-half
  technical duplicate of the held-out cells; its aggregate sits in ``baselines`` so that every
  table shows it beside the model, and it has no ``per_query`` rows, so no comparison or
  "better than every baseline" ever includes it (its truth is half the cells, not all).
- ``additive`` (only when combinations are held out): ``delta^_{A+B} = delta_A(train) +
  delta_B(train)`` from the singles of the same context; a query that is not a combination or
  whose singles were not all seen in training falls back to ``train_mean`` (counted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from pydantic import BaseModel, Field

from harmonycell.tools.data.genes import UNS_PERT_EMBEDDING, perturbation_embedding
from harmonycell.tools.genes.db import GeneDB, GeneKnowledgeMissing
from harmonycell.tools.genes.features import knowledge_features
from harmonycell.tools.evaluation.ceiling import CEILING_DEFINITION, NOISE_CEILING, noise_ceiling
from harmonycell.tools.evaluation.metrics import DEFINITIONS, PerturbationScore, score
from harmonycell.tools.evaluation.pseudobulk import (
    Targets,
    control_code_sets,
    first_available,
    stacked_group_means,
    targets_for,
)
from harmonycell.tools.schema import SPLIT, split_condition
from harmonycell.tools.data.taskdata import context_labels

LINEAR_K = 10
LINEAR_LAMBDA = 0.1
LINEAR_GO = "linear_go"


class FallbackQuery(BaseModel):
    condition: str
    context: str
    why: str


class Fallback(BaseModel):
    """Queries on which a baseline could not be computed and predicted ``to`` instead."""

    n: int
    of: int
    conditions: list[str]
    why: str
    to: str = "train_mean"
    queries: list[FallbackQuery] = Field(default_factory=list)

    @property
    def every_query(self) -> bool:
        return self.of > 0 and self.n == self.of


class BaselinesReport(BaseModel):
    split: str
    test_conditions: list[str]
    n_queries: int
    n_genes: int
    contexts: list[str]
    control_cells: dict[str, int]  # control cells behind y_ctrl, per context
    baselines: dict[str, dict[str, float | None]]
    null_counts: dict[str, dict[str, int]]
    per_context: dict[str, dict[str, dict[str, float | None]]]
    fallbacks: dict[str, Fallback]
    per_query: dict[str, list[PerturbationScore]] = Field(default_factory=dict)  # per baseline
    definitions: dict[str, str] = Field(default_factory=lambda: dict(DEFINITIONS))
    baseline_definitions: dict[str, str] = Field(default_factory=dict)
    omitted: dict[str, str] = Field(default_factory=dict)  # baseline -> why it was not computed


BASELINE_DEFINITIONS = {
    "control_mean": "y^ = mean of all control cells of the context (no effect).",
    "train_mean": "y^ = control mean + mean over training perturbations of their effect "
                  "(y_q(train) - y_ctrl) in the same context.",
    "linear": f"Ahlmann-Eltze linear model: K={LINEAR_K} PCs of training pseudo-bulk deltas, "
              f"ridge lambda={LINEAR_LAMBDA}, the perturbed gene's row of the PCs of training "
              "pseudo-bulk over all measured genes as its embedding; train_mean where the "
              "perturbation is not a measured gene (listed per query).",
    LINEAR_GO: f"linear on gene knowledge: the linear model (K={LINEAR_K}, lambda={LINEAR_LAMBDA}) "
               "with the perturbed gene's GO embedding (org.Hs.eg.db, TF-IDF SVD-64) as its "
               "embedding; the linear prediction where the database does not know the gene "
               "(listed per query).",
    "additive": "y^_{A+B} = control mean + effect of A + effect of B, singles seen in training.",
    NOISE_CEILING: CEILING_DEFINITION,
}


class TrainEffects:
    """Training pseudo-bulk effects: one row per (condition, context) of perturbed train cells."""

    def __init__(self, adata: AnnData, contexts: list[str]):
        obs = adata.obs
        ctx = pd.Categorical(context_labels(obs).to_numpy(), categories=contexts)
        ctx_code = ctx.codes.astype(np.int64)
        train = (obs[SPLIT].astype(str) == "train").to_numpy() & ~obs["is_control"].astype(bool).to_numpy()
        cond_codes, cond_names = pd.factorize(obs["condition_name"].astype(str).to_numpy())
        pair = cond_codes.astype(np.int64) * len(contexts) + ctx_code
        groups, inverse = np.unique(pair[train], return_inverse=True)
        codes = np.full(len(pair), -1, dtype=np.int64)
        codes[train] = inverse
        ctrl_sets = control_code_sets(adata, ctx_code, "train")
        (means, _), *ctrl_res = stacked_group_means(  # one pass over X
            adata.X, [(codes, len(groups))] + [(c, len(contexts)) for c in ctrl_sets])
        ctrl_all = first_available(ctrl_res[2:], ["all"])[0]  # the same reference as Targets.y_ctrl
        self.conditions = [str(cond_names[g // len(contexts)]) for g in groups]
        self.context = (groups % len(contexts)).astype(np.int64)
        self.delta = means - ctrl_all[self.context]  # (T, G)
        self.n_contexts = len(contexts)

    def rows(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.context == c)

    def mean_shift(self, c: int) -> np.ndarray:
        rows = self.rows(c)
        if len(rows) == 0:
            rows = np.arange(len(self.conditions))
        if len(rows) == 0:
            return np.zeros(self.delta.shape[1])
        return self.delta[rows].mean(0)


def _train_mean(t: Targets, eff: TrainEffects) -> np.ndarray:
    shifts = np.stack([eff.mean_shift(c) for c in range(eff.n_contexts)])
    return t.y_ctrl + shifts[t.query_context]


def top_left_singular(A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k left singular vectors and values of A (genes x perturbations), from the
    eigendecomposition of the smaller Gram matrix (much faster than a thin SVD here);
    directions with a singular value ~0 are dropped."""
    small = A.shape[1] <= A.shape[0]
    w, V = np.linalg.eigh(A.T @ A if small else A @ A.T)
    order = np.argsort(w)[::-1][:k]
    s = np.sqrt(np.maximum(w[order], 0.0))
    keep = s > 1e-8 * max(s.max(initial=0.0), 1e-300)
    s, order = s[keep], order[keep]
    return ((A @ V[:, order]) / s if small else V[:, order]), s


def fit_linear(D: np.ndarray, P_rows: list[np.ndarray | None], k: int = LINEAR_K, lam: float = LINEAR_LAMBDA):
    """Fit the Ahlmann-Eltze model on training deltas D (T perturbations x G genes) with
    ``P_rows[i]`` the embedding of training perturbation i (None: not a measured gene).

    Returns (G_pcs (G, K), W (K, K_P), b (G,)) or None when fewer than two training perturbations
    have an embedding."""
    usable = [i for i, p in enumerate(P_rows) if p is not None]
    if len(usable) < 2:
        return None
    b = D.mean(0)
    Dc = (D - b).T  # genes x perturbations
    u, s = top_left_singular(Dc, k)
    k = len(s)
    if k < 1:
        return None
    G = u[:, :k]
    P = np.stack([np.asarray(P_rows[i], dtype=np.float64) for i in usable])  # (T_used, K_P)
    Y = Dc[:, usable]
    kp = P.shape[1]
    W = np.linalg.solve(G.T @ G + lam * np.eye(k), G.T @ Y @ P) @ np.linalg.inv(P.T @ P + lam * np.eye(kp))
    return G, W, b


NO_GENE = "no perturbation of the condition is a measured gene (a drug, a cytokine, or a gene the input does not measure)"
NO_FIT = "fewer than two training perturbations on measured genes to fit"


def embedding_of(adata: AnnData) -> dict[str, np.ndarray]:
    """Perturbation name -> embedding vector: the one unify stored (all measured genes, training
    cells), else computed here on the task's genes (an AnnData made without ``unify``)."""
    e = adata.uns.get(UNS_PERT_EMBEDDING)
    if e is None:
        e = perturbation_embedding(adata)
    vectors = np.asarray(e["vectors"], dtype=np.float64)
    return {str(p): vectors[i] for i, p in enumerate(list(e["perts"]))}


def condition_vector(condition: str, emb: dict[str, np.ndarray]) -> np.ndarray | None:
    parts = [emb[p] for p in split_condition(condition) if p in emb]
    return np.sum(parts, axis=0) if parts else None


def go_embedding_of(conditions: list[str]) -> tuple[dict[str, np.ndarray], str]:
    """Perturbation name -> its GO embedding row, for the genes the database knows; and, when
    the database is absent, the one-line reason (with an empty map)."""
    vocab = sorted({p for c in conditions for p in split_condition(c)})
    try:
        with GeneDB() as db:
            k = knowledge_features(vocab, db)
    except GeneKnowledgeMissing as e:
        return {}, e.one_line()
    return {v: k.matrix[i].astype(np.float64) for i, v in enumerate(vocab) if v in k.symbols}, ""


def known_vector(condition: str, emb: dict[str, np.ndarray]) -> np.ndarray | None:
    """The summed embedding of a condition whose every part is in ``emb``; else None (a partial
    sum would describe another condition)."""
    parts = split_condition(condition)
    return np.sum([emb[p] for p in parts], axis=0) if parts and all(p in emb for p in parts) else None


NOT_KNOWN = "a gene of the condition is not in the gene database (a drug, a reporter, an unknown name)"


def _linear(t: Targets, eff: TrainEffects, adata: AnnData, fallback: np.ndarray,
            emb: dict[str, np.ndarray] | None = None, fallback_to: str = "train_mean"
            ) -> tuple[np.ndarray, Fallback]:
    """The Ahlmann-Eltze model with ``emb`` as P (the data's PCA embedding when None);
    queries it cannot predict take ``fallback`` (named ``fallback_to``)."""
    knowledge = emb is not None
    vector = known_vector if knowledge else condition_vector
    emb = emb if knowledge else embedding_of(adata)
    no_vector = NOT_KNOWN if knowledge else NO_GENE
    train_P = [vector(c, emb) for c in eff.conditions]
    pooled: tuple | None = None
    pooled_tried = False
    pred = fallback.copy()
    fell: list[FallbackQuery] = []
    for c in np.unique(t.query_context):  # contexts
        rows = eff.rows(c)
        model = fit_linear(eff.delta[rows], [train_P[i] for i in rows]) if len(rows) >= 2 else None
        if model is None:  # too little in this context: fit on all contexts' deltas
            if not pooled_tried:
                pooled, pooled_tried = fit_linear(eff.delta, train_P), True
            model = pooled
        for q in np.flatnonzero(t.query_context == c):  # queries
            v = vector(t.queries[q].condition, emb)
            if model is None or v is None:
                fell.append(FallbackQuery(condition=t.queries[q].condition, context=t.queries[q].context,
                                          why=no_vector if v is None else NO_FIT))
                continue
            G, W, b = model
            pred[q] = t.y_ctrl[q] + G @ (W @ v) + b
    return pred, Fallback(n=len(fell), of=len(t.queries), conditions=sorted({f.condition for f in fell}),
                          why="; ".join(sorted({f.why for f in fell})) or "none", to=fallback_to, queries=fell)


def _additive(t: Targets, eff: TrainEffects, fallback: np.ndarray) -> tuple[np.ndarray, Fallback]:
    index = {(cond, int(c)): i for i, (cond, c) in enumerate(zip(eff.conditions, eff.context))}
    pred = fallback.copy()
    fell = []
    why = "not a combination, or a single of it not seen in training in this context"
    for q, query in enumerate(t.queries):  # queries
        parts = split_condition(query.condition)
        rows = [index.get((p, int(t.query_context[q]))) for p in parts]
        if len(parts) < 2 or any(r is None for r in rows):
            fell.append(FallbackQuery(condition=query.condition, context=query.context, why=why))
            continue
        pred[q] = t.y_ctrl[q] + eff.delta[rows].sum(0)
    return pred, Fallback(n=len(fell), of=len(t.queries), conditions=sorted({f.condition for f in fell}),
                          why=why if fell else "none", queries=fell)


def has_combinations(t: Targets) -> bool:
    return any(len(split_condition(q.condition)) > 1 for q in t.queries)


def _all(adata: AnnData, split: str, t: Targets | None = None
         ) -> tuple[Targets, dict[str, np.ndarray], dict[str, Fallback], dict[str, str]]:
    t = t or targets_for(adata, split)
    eff = TrainEffects(adata, t.contexts)
    tm = _train_mean(t, eff)
    preds = {"control_mean": t.y_ctrl.copy(), "train_mean": tm}
    fallbacks, omitted = {}, {}
    preds["linear"], fallbacks["linear"] = _linear(t, eff, adata, tm)
    go, why = go_embedding_of([*eff.conditions, *(q.condition for q in t.queries)])
    if not any(known_vector(q.condition, go) is not None for q in t.queries):
        omitted[LINEAR_GO] = why or "the gene database knows no held-out query's genes: it would repeat linear"
    else:
        preds[LINEAR_GO], fallbacks[LINEAR_GO] = _linear(t, eff, adata, preds["linear"], go, "linear")
    if has_combinations(t):
        preds["additive"], fallbacks["additive"] = _additive(t, eff, tm)
    return t, preds, fallbacks, omitted


def baseline_predictions(adata: AnnData, split: str) -> dict[str, np.ndarray]:
    """(Q, G) predictions of every baseline, rows in ``targets_for(adata, split)`` query order."""
    return _all(adata, split)[1]


def compute_baselines(adata: AnnData, split: str = "test", targets: Targets | None = None) -> BaselinesReport:
    t, preds, fallbacks, omitted = _all(adata, split, targets)
    reports = {name: score(t, p) for name, p in preds.items()}
    ceiling = noise_ceiling(adata, split, t)
    return BaselinesReport(
        split=split,
        test_conditions=sorted({q.condition for q in t.queries}),
        n_queries=len(t.queries),
        n_genes=len(t.genes),
        contexts=sorted({q.context for q in t.queries}),
        control_cells={q.context: int(n) for q, n in zip(t.queries, t.n_ctrl)},  # all controls of the context
        baselines={**{n: r.aggregate for n, r in reports.items()}, NOISE_CEILING: ceiling.aggregate},
        null_counts={**{n: r.null_counts for n, r in reports.items()}, NOISE_CEILING: ceiling.null_counts},
        per_context={**{n: r.per_context for n, r in reports.items()}, NOISE_CEILING: ceiling.per_context},
        fallbacks=fallbacks,
        per_query={n: r.per_perturbation for n, r in reports.items()},
        baseline_definitions={n: BASELINE_DEFINITIONS[n] for n in [*preds, NOISE_CEILING]},
        omitted=omitted,
    )
