"""Choosing B genes: the uncertainty shortlist and the selection rules.

- ``shortlist``: the top-k candidates by epistemic uncertainty (SPEC section 11: k = 200);
- ``builtin_rerank`` (ours): greedy, one pick at a time, maximising
  ``u / max u - diversity * s + pathway * novel`` where ``s`` is the largest |cosine| between the
  candidate's embedding and those of every measured gene and every gene already picked, and
  ``novel`` is 1 when the candidate belongs to a gene set none of whose genes is measured or
  picked yet. With gene sets, a set takes at most ``cap`` picks: a candidate whose every set is
  full is passed over while any other candidate remains (then the cap is relaxed, and the
  rationale says so). Each pick carries the reasons it was made;
- ``top_uncertainty`` (BALD-style): the B most uncertain;
- ``iterpert_select`` (IterPert-style): the B highest ``u / max u - lambda * s_acquired``,
  ``s_acquired`` the largest |cosine| to an already acquired gene (not to this batch's picks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

SHORTLIST_K = 200


class RerankWeights(BaseModel):
    diversity: float = 0.5
    pathway: float = 0.25


def shortlist_indices(u: np.ndarray, k: int = SHORTLIST_K) -> np.ndarray:
    """Indices of the k most uncertain, most uncertain first (ties keep the input order)."""
    return np.argsort(-np.asarray(u), kind="stable")[:k]


def uncertainty_ranks(u: np.ndarray) -> np.ndarray:
    """1 = most uncertain."""
    ranks = np.empty(len(u), np.int64)
    ranks[shortlist_indices(u, len(u))] = np.arange(1, len(u) + 1)
    return ranks


def abs_cosine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(len(A), len(B)) |cosine similarity|; a zero vector is similar to nothing."""
    def unit(M):
        n = np.linalg.norm(M, axis=1, keepdims=True)
        return np.divide(M, n, out=np.zeros_like(M, dtype=np.float64), where=n > 0)
    if len(A) == 0 or len(B) == 0:
        return np.zeros((len(A), len(B)))
    return np.abs(unit(np.asarray(A, float)) @ unit(np.asarray(B, float)).T)


@dataclass
class Shortlist:
    genes: list[str]
    u: np.ndarray  # (k,)
    u_rank: np.ndarray  # (k,) rank among all candidates, 1 = most uncertain
    emb: np.ndarray  # (k, d)
    n_candidates: int
    pathways: list[list[str]] | None = None  # gene sets of each entry (None: no gene sets given)


@dataclass
class Choice:
    index: int  # into the shortlist
    similarity: float  # largest |cosine| to a measured or already picked gene
    nearest: str | None
    nearest_is_pick: bool
    novel: list[str]  # gene sets this pick is the first measured member of
    capped_relaxed: bool
    rationale: str


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def builtin_rerank(sl: Shortlist, measured: list[str], measured_emb: np.ndarray, budget: int,
                   covered: set[str] | None = None, cap: int | None = None,
                   weights: RerankWeights | None = None) -> list[Choice]:
    w = weights or RerankWeights()
    k = len(sl.genes)
    budget = min(budget, k)
    u_norm = sl.u / max(float(sl.u.max(initial=0.0)), 1e-300)
    sim_m = abs_cosine(sl.emb, measured_emb)
    best_sim = sim_m.max(1) if sim_m.shape[1] else np.zeros(k)
    nearest = [measured[j] for j in sim_m.argmax(1)] if sim_m.shape[1] else [None] * k
    near_pick = np.zeros(k, bool)
    covered = set(covered or ())
    picks_per_set: dict[str, int] = {}
    chosen: list[Choice] = []
    taken = np.zeros(k, bool)
    for _ in range(budget):  # one pick per step; each step rescans the shortlist
        full = np.zeros(k, bool)
        novel_flag = np.zeros(k)
        if sl.pathways is not None:
            for i, sets in enumerate(sl.pathways):
                full[i] = bool(sets) and cap is not None and all(picks_per_set.get(p, 0) >= cap for p in sets)
                novel_flag[i] = float(any(p not in covered for p in sets))
        score = u_norm - w.diversity * best_sim + w.pathway * novel_flag
        relaxed = False
        open_ = ~taken & ~full
        if not open_.any():
            open_, relaxed = ~taken, True
        i = int(np.flatnonzero(open_)[np.argmax(score[open_])])
        sets = sl.pathways[i] if sl.pathways is not None else []
        novel = [p for p in sets if p not in covered]
        choice = Choice(i, float(best_sim[i]), nearest[i], bool(near_pick[i]), novel, relaxed, "")
        choice.rationale = _rationale(sl, i, choice, picks_per_set, cap)
        chosen.append(choice)
        taken[i] = True
        for p in sets:
            picks_per_set[p] = picks_per_set.get(p, 0) + 1
            covered.add(p)
        sim_new = abs_cosine(sl.emb, sl.emb[i:i + 1])[:, 0]
        closer = (sim_new > best_sim) | np.array([n is None for n in nearest])
        best_sim = np.where(closer, sim_new, best_sim)
        nearest = [sl.genes[i] if c else n for c, n in zip(closer, nearest)]
        near_pick = np.where(closer, True, near_pick)
    return chosen


def _rationale(sl: Shortlist, i: int, c: Choice, picks_per_set: dict[str, int], cap: int | None) -> str:
    parts = [f"uncertainty {sl.u[i]:.3g}, {_ordinal(int(sl.u_rank[i]))} of {sl.n_candidates} candidates"]
    if c.nearest is not None:
        what = "picked above" if c.nearest_is_pick else "measured"
        parts.append(f"closest known gene {c.nearest} ({what}), absolute cosine {c.similarity:.2f}")
    if sl.pathways is not None:
        sets = sl.pathways[i]
        if not sets:
            parts.append("in none of the given gene sets")
        elif c.novel:
            parts.append(f"first gene of {', '.join(c.novel)} to be measured")
        else:
            counts = ", ".join(f"{p} ({_ordinal(picks_per_set.get(p, 0) + 1)} pick"
                               + (f", cap {cap})" if cap else ")") for p in sets)
            parts.append(f"adds to {counts}")
        if c.capped_relaxed:
            parts.append("every remaining candidate's gene sets were at the cap, so the cap was relaxed")
    return "; ".join(parts)


def top_uncertainty(u: np.ndarray, budget: int) -> np.ndarray:
    return shortlist_indices(u, budget)


def iterpert_select(u: np.ndarray, sim_to_acquired: np.ndarray, budget: int, lam: float = 0.5) -> np.ndarray:
    score = u / max(float(u.max(initial=0.0)), 1e-300) - lam * sim_to_acquired
    return np.argsort(-score, kind="stable")[:budget]
