"""The one-standard-error rule for the pick (Breiman et al. 1984, CART; Hastie, Tibshirani and
Friedman, ESL section 7.10): the simplest candidate whose validation score is within one standard
error of the best one's.

Validation splits hold a handful of queries, so a network's lead over a simple model on them is
often noise; among candidates that validation cannot tell apart, the simpler one is the pick.

Plain data in, plain data out: each candidate's per-query validation values of the headline (the
same queries, in the same order, for every candidate), its complexity rank, and which candidate
the validation ranking put first. The host computes the values (``agents.search``); this module
reads no file.

The standard error is that of the mean of the per-query *paired* differences between a candidate
and the best: every candidate is scored on the same queries, and a query that is hard for one
model is hard for the others, so the paired SE removes that shared difficulty, which the SE of
the best's own values would count as noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from pydantic import BaseModel

from harmonycell.tools.search.actions import closed_form, residual_base

# complexity ranks: a closed-form simple model, a network learning the residual of one, any
# other network; an ensemble ranks one above its most complex member
SIMPLE, RESIDUAL, NETWORK = 0, 1, 2
MIN_QUERIES = 2  # a standard error needs two paired differences


@dataclass(frozen=True)
class Candidate:
    id: str  # a node id, or the ensemble's
    label: str  # what it is in words (an action path, or the ensemble's label)
    complexity: int
    values: Sequence[float] | None  # per-query validation values (the metric's own direction); None: undefined


class PickRule(BaseModel):
    """What the rule did, on the tree (``Tree.pick_rule``) for ``Tree.pick`` and the report."""

    rule: str = "one standard error"
    metric: str  # the validation metric the values are of
    n_queries: int
    best: str  # the validation ranking's choice
    best_label: str
    best_mean: float | None  # in the metric's own direction, as reported
    picked: str
    picked_label: str
    picked_mean: float | None
    se: float | None  # paired SE of the picked candidate's difference to the best (None: fell back)
    applied: bool  # False: the rule could not run and the pick is the validation ranking's
    why: str


def complexity_of(action: str) -> int:
    """A node's complexity rank from its action path. A residual network names its simple model
    in an ``on:SIMPLE`` segment, which refinements below it may follow."""
    if closed_form(action):
        return SIMPLE
    prefixes = ["/".join(action.split("/")[:i]) for i in range(1, action.count("/") + 2)]
    return RESIDUAL if any(residual_base(p) for p in prefixes) else NETWORK


def ensemble_complexity(member_actions: Sequence[str]) -> int:
    return max(complexity_of(a) for a in member_actions) + 1


def paired_se(a: Sequence[float], b: Sequence[float]) -> float:
    """Standard error of the mean of the per-query differences ``a - b`` (sample SD / sqrt(n))."""
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    m = sum(d) / n
    return math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1) / n)


def _defined(values: Sequence[float] | None, n: int) -> bool:
    return values is not None and len(values) == n and all(math.isfinite(v) for v in values)


def one_se_pick(candidates: list[Candidate], best: str, metric: str, higher_is_better: bool) -> PickRule:
    """The lowest-complexity candidate whose mean is within one paired SE of ``best``'s; among
    equally simple ones the better mean, then the order of ``candidates`` (the validation
    ranking's). Where the best has fewer than two defined per-query values, the pick is ``best``
    (the validation ranking's rule) and the record says why. A candidate with an undefined
    per-query value cannot be compared and is passed over."""
    by_id = {c.id: c for c in candidates}
    top = by_id[best]
    sign = 1.0 if higher_is_better else -1.0

    def shown(c: Candidate) -> float | None:  # the mean in the metric's own direction, as reported
        ok = c.values is not None and len(c.values) > 0 and _defined(c.values, len(c.values))
        return sum(c.values) / len(c.values) if ok else None

    def record(c: Candidate, se: float | None, applied: bool, why: str, n: int) -> PickRule:
        return PickRule(metric=metric, n_queries=n, best=top.id, best_label=top.label, best_mean=shown(top),
                        picked=c.id, picked_label=c.label, picked_mean=shown(c), se=se, applied=applied, why=why)

    n = len(top.values) if top.values is not None else 0
    if n < MIN_QUERIES:
        return record(top, None, False, f"{n} validation quer{'y' if n == 1 else 'ies'}: no standard error, "
                      "so the pick is the best on validation", n)
    if not _defined(top.values, n):
        return record(top, None, False, "the best's per-query validation values are undefined: no standard "
                      "error, so the pick is the best on validation", n)
    mean = lambda c: sign * sum(c.values) / n  # larger is better
    within = []
    for order, c in enumerate(candidates):
        if not _defined(c.values, n):
            continue
        se = paired_se(top.values, c.values)
        if mean(c) >= mean(top) - se:
            within.append((c.complexity, -mean(c), order, c, se))
    _, _, _, pick, se = min(within, key=lambda t: t[:3])  # the best itself is always within
    if pick.id == top.id:
        why = "no simpler candidate is within one standard error of the best; the best is the pick"
    else:
        why = "the simpler model is within one standard error of the best; the simpler model is the pick"
    return record(pick, se, True, why, n)
