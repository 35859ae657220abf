"""Epistemic uncertainty of a perturbation's predicted effect, from a bootstrap ridge ensemble.

Predictor (one member): ridge regression from a gene's embedding to the pseudo-bulk effect of
perturbing it, ``delta(g) ~ (e_g - mean e) W + mean delta``, fitted on the measured
perturbations of one context (a combination's embedding is the sum of its genes', as in the
linear baseline). Embedding: the gene's loadings on the top ``EMBED_PCS`` principal components
of the measured expression (``taskdata.pca_gene_loadings``, the linear baseline's gene
embedding), so every measured gene -- perturbed or not -- has one.

Ensemble: ``MEMBERS`` members, each fitted on a bootstrap resample (with replacement) of the
measured perturbations. Bootstraps, not seeds: ridge regression is deterministic, so members that
differ only in a seed would agree exactly; resampling the data is what makes them disagree where
the data do not pin the prediction down. ``u(g)`` = variance across members of the predicted
effect, per output gene, averaged over genes (SPEC section 11); with several contexts, averaged
over the contexts that have enough perturbations to fit.

Why not the run's selected architecture retrained with M seeds: one sandbox training takes
tens of seconds to minutes, and M of them per plan (and per round in a retrospective benchmark)
does not fit a shared 2-core machine; the ridge ensemble takes milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData

from harmonycell.tools.data.taskdata import N_FEATURE_PCS, dense, pca_gene_loadings
from harmonycell.tools.errors import InputError
from harmonycell.tools.evaluation.pseudobulk import gene_lookup, measured_genes, stacked_group_means
from harmonycell.tools.schema import context_labels

MEMBERS = 10
EMBED_PCS = N_FEATURE_PCS
RIDGE_ALPHA = 0.1  # lambda as a fraction of the mean eigenvalue of E'E (scale-free)
MAX_EMBED_CELLS = 20000  # cells behind the PCA (a seeded subsample above this)
MIN_FIT = 3  # measured perturbations on measured genes a context needs to fit an ensemble

METHOD = (f"bootstrap ridge ensemble: {{members}} ridge regressions (lambda = {RIDGE_ALPHA} x mean "
          "eigenvalue) from a gene's PCA-loading embedding to its pseudo-bulk effect, each fitted on "
          "a bootstrap resample of the measured perturbations (bootstraps, not seeds: ridge is "
          "deterministic, so only resampling makes members disagree); uncertainty = per-gene "
          "variance across members, averaged over genes")


def gene_embeddings(X, k: int = EMBED_PCS, max_cells: int = MAX_EMBED_CELLS, seed: int = 0) -> np.ndarray:
    """Genes x k embedding from expression X (cells x genes, dense or sparse)."""
    rows = np.arange(X.shape[0])
    if len(rows) > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_cells, replace=False))
    return pca_gene_loadings(dense(X[rows]), k).astype(np.float64)


def embed(emb: np.ndarray, gene_lists: list[list[int]]) -> np.ndarray:
    """One row per perturbation: the sum of its genes' embeddings."""
    return np.stack([emb[g].sum(0) for g in gene_lists]) if gene_lists else np.zeros((0, emb.shape[1]))


@dataclass(frozen=True)
class RidgeFit:
    x_mean: np.ndarray  # (k,)
    y_mean: np.ndarray  # (G,)
    W: np.ndarray  # (k, G)

    def predict(self, E: np.ndarray) -> np.ndarray:
        return self.y_mean + (E - self.x_mean) @ self.W


def fit_ridge(E: np.ndarray, Y: np.ndarray, alpha: float = RIDGE_ALPHA) -> RidgeFit:
    xm, ym = E.mean(0), Y.mean(0)
    Ec = E - xm
    gram = Ec.T @ Ec
    lam = alpha * max(np.trace(gram) / max(len(gram), 1), 1e-12)
    W = np.linalg.solve(gram + lam * np.eye(len(gram)), Ec.T @ (Y - ym))
    return RidgeFit(xm, ym, W)


def bootstrap_ensemble(E: np.ndarray, Y: np.ndarray, members: int = MEMBERS, seed: int = 0,
                       alpha: float = RIDGE_ALPHA) -> list[RidgeFit]:
    rng = np.random.default_rng(seed)
    n = len(E)
    return [fit_ridge(E[idx], Y[idx], alpha) for idx in (rng.integers(0, n, n) for _ in range(members))]


def epistemic_uncertainty(members: list[RidgeFit], E: np.ndarray) -> np.ndarray:
    """(n,) per-gene variance of the members' predictions, averaged over genes."""
    preds = np.stack([m.predict(E) for m in members])  # (M, n, G)
    return preds.var(0).mean(-1)


@dataclass
class MeasuredEffects:
    """Pseudo-bulk effects of every measured perturbation (all splits), per context."""

    contexts: list[str]
    conditions: list[list[str]]  # per context: the conditions fitted
    genes: list[list[list[int]]]  # per context, per condition: its measured perturbed genes
    deltas: list[np.ndarray]  # per context: (n, G) mean perturbed minus mean control expression
    not_embeddable: list[str] = field(default_factory=list)  # conditions none of whose genes is measured


def measured_effects(adata: AnnData) -> MeasuredEffects:
    obs = adata.obs
    ctx_labels = context_labels(obs).to_numpy()
    contexts = sorted(set(ctx_labels))
    ctx_code = pd.Categorical(ctx_labels, categories=contexts).codes.astype(np.int64)
    is_ctrl = obs["is_control"].astype(bool).to_numpy()
    cond_codes, cond_names = pd.factorize(obs["condition_name"].astype(str).to_numpy())
    pair = np.where(is_ctrl, -1, cond_codes.astype(np.int64) * len(contexts) + ctx_code)
    groups, inverse = np.unique(pair[~is_ctrl], return_inverse=True)
    codes = np.full(len(pair), -1, np.int64)
    codes[~is_ctrl] = inverse
    (means, _), (ctrl, n_ctrl) = stacked_group_means(
        adata.X, [(codes, len(groups)), (np.where(is_ctrl, ctx_code, -1), len(contexts))])
    lookup = gene_lookup(adata)
    out = MeasuredEffects(contexts, [[] for _ in contexts], [[] for _ in contexts], [])
    rows: list[list[int]] = [[] for _ in contexts]
    for gi, g in enumerate(groups):  # (condition, context) groups
        name, c = str(cond_names[g // len(contexts)]), int(g % len(contexts))
        genes = measured_genes(name, lookup)
        if not genes:
            out.not_embeddable.append(name)
            continue
        if n_ctrl[c] == 0:
            continue
        out.conditions[c].append(name)
        out.genes[c].append(genes)
        rows[c].append(gi)
    out.deltas = [means[r] - ctrl[c] for c, r in enumerate(rows)]
    out.not_embeddable = sorted(set(out.not_embeddable))
    return out


@dataclass
class Uncertainty:
    values: np.ndarray  # (n_candidates,)
    contexts_used: dict[str, int]  # context -> perturbations fitted
    contexts_skipped: dict[str, int]  # context -> perturbations (fewer than MIN_FIT)
    not_embeddable: list[str]
    members: int


def candidate_uncertainty(effects: MeasuredEffects, emb: np.ndarray, columns: list[int],
                          members: int = MEMBERS, seed: int = 0) -> Uncertainty:
    """u(g) for the candidate genes ``columns``, averaged over the contexts that can be fitted."""
    used, skipped, per_ctx = {}, {}, []
    E_cand = emb[columns]
    for c, ctx in enumerate(effects.contexts):
        n = len(effects.conditions[c])
        if n < MIN_FIT:
            skipped[ctx] = n
            continue
        ens = bootstrap_ensemble(embed(emb, effects.genes[c]), effects.deltas[c], members, seed + c)
        per_ctx.append(epistemic_uncertainty(ens, E_cand))
        used[ctx] = n
    if not per_ctx:
        raise InputError(
            f"too few measured perturbations of measured genes to fit an ensemble (need {MIN_FIT} "
            f"in one context; have {skipped or 0})",
            fix="plan on a run whose data perturb at least three of the genes they measure")
    return Uncertainty(np.mean(per_ctx, axis=0), used, skipped, effects.not_embeddable, members)
