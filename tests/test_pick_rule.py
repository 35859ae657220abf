"""The one-standard-error rule for the pick (issue 27): on plain data, and recorded on the tree
so that ``Tree.pick``, its sentence and the ensemble's line follow it."""

from __future__ import annotations

import math

import pytest

from harmonycell.tools.search import tree as T
from harmonycell.tools.search.selection import (NETWORK, RESIDUAL, SIMPLE, Candidate, complexity_of,
                                                ensemble_complexity, one_se_pick, paired_se)

NET = [0.70, 0.60, 0.80, 0.55, 0.70]
CLOSE = [0.55, 0.70, 0.62, 0.65, 0.60]  # mean 0.624 vs 0.670, paired SE 0.061
FAR = [0.30, 0.25, 0.40, 0.20, 0.35]  # far below on every query


def test_complexity_ranks():
    assert complexity_of("simple/ridge") == SIMPLE == 0
    assert complexity_of("discriminative/resnet/on:ridge") == RESIDUAL == 1
    assert complexity_of("discriminative/resnet/on:ridge/hparams:width=64") == RESIDUAL
    assert complexity_of("discriminative/resnet") == NETWORK == 2
    assert ensemble_complexity(["simple/ridge", "discriminative/resnet/on:ridge"]) == 2
    assert ensemble_complexity(["simple/ridge", "simple/nearest-gene"]) == 1


def test_paired_se_is_the_se_of_the_mean_difference():
    d = [a - b for a, b in zip(NET, CLOSE)]
    m = sum(d) / len(d)
    want = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1)) / math.sqrt(len(d))
    assert paired_se(NET, CLOSE) == pytest.approx(want)
    assert paired_se(NET, [x - 0.1 for x in NET]) == pytest.approx(0.0)  # a constant gap has no noise


def test_a_simple_model_within_one_se_of_a_network_is_picked():
    se = paired_se(NET, CLOSE)
    assert sum(NET) / 5 - sum(CLOSE) / 5 < se  # the premise: within one SE
    cands = [Candidate("n004", "discriminative/resnet", NETWORK, NET),
             Candidate("n001", "simple/ridge", SIMPLE, CLOSE)]
    rule = one_se_pick(cands, "n004", "Discrimination_score", True)
    assert rule.applied and rule.best == "n004" and rule.picked == "n001"
    assert rule.se == pytest.approx(se)
    assert rule.best_mean == pytest.approx(0.67) and rule.picked_mean == pytest.approx(0.624)


def test_a_network_beyond_one_se_stays_the_pick():
    cands = [Candidate("n004", "discriminative/resnet", NETWORK, NET),
             Candidate("n001", "simple/ridge", SIMPLE, FAR)]
    rule = one_se_pick(cands, "n004", "Discrimination_score", True)
    assert rule.applied and rule.picked == "n004" and rule.se == 0.0
    assert "no simpler candidate" in rule.why


def test_an_ensemble_within_one_se_of_a_simple_model_loses_to_it():
    ens = [0.71, 0.62, 0.76, 0.57, 0.72]
    cands = [Candidate(T.ENSEMBLE_ID, "an ensemble of n001, n004", 3, ens),
             Candidate("n004", "discriminative/resnet", NETWORK, NET),
             Candidate("n001", "simple/ridge", SIMPLE, CLOSE)]
    rule = one_se_pick(cands, T.ENSEMBLE_ID, "Discrimination_score", True)
    assert rule.picked == "n001"


def test_the_simplest_wins_then_the_better_mean_within_one_complexity():
    a = [0.66, 0.59, 0.79, 0.56, 0.69]  # a residual network, closer to the best than CLOSE
    cands = [Candidate("n004", "discriminative/resnet", NETWORK, NET),
             Candidate("n003", "discriminative/resnet/on:ridge", RESIDUAL, a),
             Candidate("n002", "simple/nearest-gene", SIMPLE, [x - 0.01 for x in CLOSE]),
             Candidate("n001", "simple/ridge", SIMPLE, CLOSE)]
    assert one_se_pick(cands, "n004", "Discrimination_score", True).picked == "n001"


def test_a_lower_is_better_metric_is_read_in_its_direction():
    # RMSE: the best is the lowest; a simple model a little higher, within one SE, is picked
    best = [1.0, 1.2, 0.9, 1.1]
    close = [1.05, 1.15, 1.0, 1.12]
    cands = [Candidate("n004", "discriminative/resnet", NETWORK, best), Candidate("n001", "simple/ridge", SIMPLE, close)]
    assert one_se_pick(cands, "n004", "RMSE", False).picked == "n001"
    far = [2.0, 2.2, 1.9, 2.1]
    cands[1] = Candidate("n001", "simple/ridge", SIMPLE, far)
    assert one_se_pick(cands, "n004", "RMSE", False).picked == "n004"


def test_one_validation_query_falls_back_to_the_best():
    cands = [Candidate("n004", "discriminative/resnet", NETWORK, [0.7]),
             Candidate("n001", "simple/ridge", SIMPLE, [0.69])]
    rule = one_se_pick(cands, "n004", "Discrimination_score", True)
    assert not rule.applied and rule.picked == "n004" and rule.se is None
    assert "1 validation query" in rule.why


def test_undefined_values_fall_back_or_are_passed_over():
    cands = [Candidate("n004", "discriminative/resnet", NETWORK, None),
             Candidate("n001", "simple/ridge", SIMPLE, CLOSE)]
    assert one_se_pick(cands, "n004", "Discrimination_score", True).picked == "n004"
    cands = [Candidate("n004", "discriminative/resnet", NETWORK, NET),
             Candidate("n001", "simple/ridge", SIMPLE, [math.nan, *CLOSE[1:]])]
    rule = one_se_pick(cands, "n004", "Discrimination_score", True)
    assert rule.applied and rule.picked == "n004"


# ----------------------------------------------------------------------------- on the tree

def hand_tree() -> T.Tree:
    tree = T.Tree()
    s = tree.add(T.ROOT, "simple", status="decision")
    d = tree.add(T.ROOT, "discriminative", status="decision")
    for parent, action, vals in ((s.id, "simple/ridge", CLOSE), (d.id, "discriminative/resnet", NET)):
        n = tree.add(parent, action)
        n.status, n.val_metric, n.reward = "ok", sum(vals) / len(vals), sum(vals) / len(vals)
    return tree  # n003 simple/ridge, n004 discriminative/resnet


def test_the_tree_records_the_rule_and_the_pick_follows_it():
    tree = hand_tree()
    assert tree.pick() == "n004"  # no record: the best on validation
    assert [c[0] for c in tree.pick_candidates()] == ["n004", "n003"]
    rule = tree.record_pick_rule({"n004": NET, "n003": CLOSE}, "Discrimination_score")
    assert rule.picked == "n003" and tree.pick() == "n003" and tree.validation_pick() == "n004"
    sentence = tree.pick_sentence("n003")
    assert sentence.startswith("The pick is a simple (closed-form) model, `simple/ridge` (validation 0.6240)")
    assert (f"n003 `simple/ridge` is within one standard error ({paired_se(NET, CLOSE):.3f}) of the best "
            "validation score (n004 `discriminative/resnet`, 0.670 vs 0.624); the simpler model is the pick") in sentence
    # it survives saving, and goes stale when the tree's best changes
    again = T.Tree.model_validate_json(tree.model_dump_json())
    assert again.pick() == "n003" and again.pick_rule == rule
    better = again.add("n002", "discriminative/mlp")
    better.status, better.val_metric, better.reward = "ok", 0.9, 0.9
    assert again.pick() == better.id


def test_the_ensemble_line_says_when_a_simpler_model_took_its_place():
    tree = hand_tree()
    tree.ensemble = T.Ensemble(members=["n004", "n003"], actions=["discriminative/resnet", "simple/ridge"],
                               weights=[0.6, 0.4], val_metric_name="Discrimination_score", val_metric=0.676,
                               val_aggregate={}, folds=5)
    ens = [0.71, 0.62, 0.76, 0.57, 0.72]
    assert tree.pick() == T.ENSEMBLE_ID
    rule = tree.record_pick_rule({"n004": NET, "n003": CLOSE, T.ENSEMBLE_ID: ens}, "Discrimination_score")
    assert rule.best == T.ENSEMBLE_ID and tree.pick() == "n003"
    assert "not picked (a simpler model is within one standard error)" in tree.ensemble_line()
    assert "the best validation score (an ensemble of n004, n003 (weights 0.60, 0.40), 0.676 vs 0.624)" \
        in tree.pick_sentence("n003")


def test_one_query_on_the_tree_says_the_rule_did_not_apply():
    tree = hand_tree()
    tree.record_pick_rule({"n004": [0.7], "n003": [0.69]}, "Discrimination_score")
    assert tree.pick() == "n004"
    assert "The one-standard-error rule did not apply: 1 validation query" in tree.pick_sentence("n004")
