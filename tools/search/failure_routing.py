"""Routing each node's outcome to the level it speaks about (SPEC 10, after CellScientist).

- implementation failure (crash, NaN, OOM, timeout: the Debugger gave up) -> the node is closed
  and counts against itself only; its backbone and paradigm keep their statistics;
- representation failure (the node ran, but its validation score is no better than the
  train-mean baseline's) -> nothing more is expanded below it; for a backbone, the next
  expansion goes to an untried sibling backbone of the same paradigm;
- hypothesis failure (two or more backbones of one paradigm failed that way) -> the paradigm's
  prior (the weight of its UCT exploration term) is lowered;
- every backbone tried and nothing left to expand, with budget left -> the best representation
  failure is reopened for refinement (its hyperparameters or loss may be what failed it), so the
  budget is spent refining rather than abandoned.

Each decision is a ``refinement_trace`` record: level, evidence, rule, action, expectation.
Pure functions of the tree (they mutate it and return the records to write).
"""

from __future__ import annotations

from typing import Any, Callable

import math

from harmonycell.tools.evaluation.metrics import SEARCH_METRIC, oriented
from harmonycell.tools.search.tree import HYPOTHESIS_PRIOR_FACTOR, ROOT, Tree, untried

REPRESENTATION = "representation failure"


def _paradigm_of(tree: Tree, node_id: str):
    cur = tree.nodes[node_id]
    while cur.parent is not None and cur.level != "paradigm":
        cur = tree.nodes[cur.parent]
    return cur if cur.level == "paradigm" else None


def route_abandoned(tree: Tree, node_id: str, error: str) -> list[dict[str, Any]]:
    node = tree.nodes[node_id]
    node.status, node.reward = "failed", 0.0
    node.visits += 1  # counts against this node only: nothing is backpropagated above it
    return [{"node": node_id, "action": node.action, "level": "implementation",
             "evidence": {"error": error[-300:]},
             "rule": "implementation failure (crash, NaN, OOM, timeout) -> Debugger; abandoned -> "
                     "counts against this node only",
             "action_taken": "node closed; its backbone's and paradigm's statistics are unchanged",
             "expectation": "other nodes of the same backbone may still run"}]


def route_scored(tree: Tree, node_id: str, val: float | None, baseline: float | None,
                 menu: Callable[[str], list[str]], same=None) -> list[dict[str, Any]]:
    """Classify a scored node against the train-mean baseline on validation and route it."""
    node = tree.nodes[node_id]
    ref = 0.0 if baseline is None else baseline  # a flat baseline (no correlation) counts as 0
    evidence = {"val": val, "train_mean_val": baseline, "compared_with": ref}
    if val is not None and val > ref:
        return [{"node": node_id, "action": node.action, "level": node.level, "evidence": evidence,
                 "rule": "better than the train-mean baseline on validation -> no failure",
                 "action_taken": "eligible for refinement",
                 "expectation": "refinements below it may improve it"}]
    why = (f"validation {val if val is None else round(val, 4)} is no better than the train-mean "
           f"baseline ({ref:.4f})")
    node.blocked = f"{REPRESENTATION}: {why}"
    records: list[dict[str, Any]] = []
    paradigm = _paradigm_of(tree, node_id)
    if node.level != "backbone" or paradigm is None:
        records.append({"node": node_id, "action": node.action, "level": "implementation",
                        "evidence": evidence,
                        "rule": "a refinement no better than train-mean -> its hyperparameters, not its "
                                "backbone, are at fault",
                        "action_taken": "not refined further; its backbone stays open",
                        "expectation": "other refinements of the backbone"})
        return records
    siblings = untried(tree, paradigm, menu, same)
    if siblings:
        tree.route = {"parent": paradigm.id,
                      "reason": f"{node.action} is a {REPRESENTATION} ({why}) -> a sibling backbone of {paradigm.action}"}
    records.append({"node": node_id, "action": node.action, "level": "representation", "evidence": evidence,
                    "rule": "runs, but no better than train-mean on validation -> sibling backbones",
                    "action_taken": (f"no refinement below {node.action}; next expansion: an untried backbone of "
                                     f"{paradigm.action} ({', '.join(siblings)})") if siblings else
                                    f"no refinement below {node.action}; no untried sibling backbone left",
                    "expectation": "another representation of the same paradigm does better"})
    failed = [k for k in tree.kids(paradigm) if k.blocked and k.blocked.startswith(REPRESENTATION)]
    if len(failed) >= 2 and paradigm.prior == 1.0:
        paradigm.prior = HYPOTHESIS_PRIOR_FACTOR
        if tree.route and tree.route["parent"] == paradigm.id:
            tree.route = None  # do not keep steering into a paradigm that is failing as a whole
        other = [k.action for k in tree.kids(tree.nodes[ROOT]) if k.id != paradigm.id]
        records.append({"node": paradigm.id, "action": paradigm.action, "level": "hypothesis",
                        "evidence": {"failed_backbones": [k.action for k in failed]},
                        "rule": "the same failure in 2+ backbones of one paradigm -> lower that paradigm's prior",
                        "action_taken": f"prior of {paradigm.action} lowered to {HYPOTHESIS_PRIOR_FACTOR} "
                                        f"(its UCT exploration term is scaled by it)",
                        "expectation": f"the search moves to {', '.join(other) or 'the other paradigm'}"})
    return records


def reopen_best(tree: Tree) -> list[dict[str, Any]]:
    """Nothing left to expand: reopen the best backbone closed as a representation failure (by
    its validation score), or nothing when none is closed that way."""
    closed = [n for n in tree.nodes.values() if n.status == "ok" and n.level == "backbone"
              and n.blocked and n.blocked.startswith(REPRESENTATION)]
    if not closed:
        return []
    best = max(closed, key=lambda n: (oriented(SEARCH_METRIC, n.val_metric) if n.val_metric is not None
                                      else -math.inf, n.id))
    was, best.blocked = best.blocked, None
    return [{"node": best.id, "action": best.action, "level": "representation",
             "evidence": {"closed_backbones": sorted(n.action for n in closed), "val": best.val_metric,
                          "was": was},
             "rule": "every backbone tried and the action space closed, with budget left -> refine the "
                     "best representation failure",
             "action_taken": f"{best.action} reopened for refinement",
             "expectation": "a refinement (loss, width, learning rate, ...) of the best backbone does better"}]
