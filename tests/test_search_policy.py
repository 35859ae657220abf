"""Hierarchical MCTS as a policy on the tree (data in, choice out), with failure routing."""

from __future__ import annotations

import random

import pytest

from harmonycell.agents.planner import builtin_policy, excluding, same_model
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.actions import child_actions, not_for
from harmonycell.tools.search.failure_routing import route_scored


def grow(tree: T.Tree, choice: T.Choice) -> T.Node:
    parent = choice.parent
    for a in choice.actions[:-1]:
        parent = tree.add(parent, a, status="decision").id
    return tree.add(parent, choice.actions[-1])


# the Planner's menu for an unseen-perturbation task (nearest-context answers held-out contexts only)
PERTURBATION_MENU = excluding(child_actions, not_for("unseen-perturbation"))


def search(reward_of, n: int, seed: int = 0, priors=None, menu=PERTURBATION_MENU) -> tuple[T.Tree, list[T.Choice]]:
    tree = T.Tree(seed=seed, priors=priors or {})
    choices = []
    for _ in range(n):
        c = builtin_policy(tree, "", tree.priors, menu)
        if c is None:
            break
        choices.append(c)
        node = grow(tree, c)
        r = reward_of(node.action)
        node.status, node.reward, node.val_metric = "ok", r, r
        T.backpropagate(tree, node.id, r)
    return tree, choices


def toy_reward(action: str) -> float:
    rnd = random.Random(action)
    base = {"ridge": 0.4, "nearest-gene": 0.33, "resnet": 0.5, "gated-mlp": 0.45, "pathway-masked": 0.3, "attribute-decoder": 0.38, "set-transformer": 0.42,
            "cvae": 0.35,
            "flow-matching": 0.4}
    return base[action.split("/")[1]] + 0.1 * rnd.random() * action.count("/")


def test_the_tree_has_paradigm_nodes_that_aggregate_their_backbones():
    tree, _ = search(toy_reward, 12)
    paradigms = [n for n in tree.nodes.values() if n.level == "paradigm"]
    assert {p.action for p in paradigms} == {"simple", "discriminative", "generative"}
    for p in paradigms:
        assert p.status == "decision"
        below = [n for n in tree.nodes.values() if n.status == "ok" and n.action.startswith(p.action + "/")]
        assert p.visits == len(below)
        assert p.q_max == pytest.approx(max(n.reward for n in below))
        assert p.q_sum == pytest.approx(sum(n.reward for n in below))


def test_sixteen_expansions_cover_every_paradigm_and_refine():
    tree, choices = search(toy_reward, 18)  # the two closed-form fits, then sixteen expansions
    trained = [n for n in tree.nodes.values() if n.status == "ok"]
    assert len(trained) == 18
    assert {n.action.split("/")[0] for n in trained} == {"simple", "discriminative", "generative"}
    assert sum(n.level == "refinement" for n in trained) >= 3
    assert any(n.level == "refinement" and n.action.count("/") >= 3 for n in trained)  # two rounds deep


def test_closed_form_models_come_first_then_the_networks():
    """Without a knowledge-base prior the simple paradigm is fitted first (seconds each), both of
    its backbones, before any network; then the search widens to the other paradigms."""
    for seed in range(4):
        _, choices = search(toy_reward, 3, seed=seed)
        assert choices[0].actions == ["simple", "simple/ridge"]
        assert choices[1].actions == ["simple/nearest-gene"]
        assert "closed-form models first" in choices[0].reason and "closed-form models first" in choices[1].reason
        assert choices[2].actions[0] in ("discriminative", "generative")
    # a knowledge-base prior orders the networks, after the closed-form fits
    _, choices = search(toy_reward, 3, priors={"generative": 0.6, "generative/cvae": 0.6})
    assert choices[0].actions == ["simple", "simple/ridge"]
    assert choices[2].actions == ["generative", "generative/cvae"] and "knowledge-base prior" in choices[2].reason


def test_expansion_follows_a_seeded_prior_not_list_order():
    networks = excluding(child_actions, {"simple"})
    firsts = {search(toy_reward, 1, seed=s, menu=networks)[1][0].actions[-1] for s in range(12)}
    assert len(firsts) >= 3  # not always discriminative/resnet
    again = {search(toy_reward, 1, seed=s, menu=networks)[1][0].actions[-1] for s in range(12)}
    assert firsts == again  # same seeds, same choices
    c = search(toy_reward, 1, seed=3, menu=networks)[1][0]
    assert "uniform prior (seed 3)" in c.reason and "UCT" not in c.reason


def test_uct_is_named_only_where_it_chose_among_several():
    _, choices = search(toy_reward, 16)
    uct_steps = [s for c in choices for s in c.steps if s.startswith("UCT chose")]
    assert uct_steps, "a 16-node search descends by UCT somewhere"
    for c in choices:
        for s in c.steps:
            assert s.startswith(("UCT chose", "uniform prior", "knowledge-base prior", "builtin prior")) \
                or "only live child" in s


def test_knowledge_base_priors_steer_the_first_expansions():
    priors = {"generative": 0.6, "generative/flow-matching": 0.6,
              "generative/flow-matching/hparams:sigma=0.3": 0.6}
    _, choices = search(toy_reward, 2, seed=0, priors=priors, menu=excluding(child_actions, {"simple"}))
    assert choices[0].actions == ["generative", "generative/flow-matching"]
    assert "knowledge-base prior" in choices[0].reason
    assert choices[1].actions == ["generative/flow-matching/hparams:sigma=0.3"]


def test_a_reordered_refinement_is_not_trained_twice():
    assert same_model("discriminative/resnet/loss:huber/hparams:lr=0.003",
                      "discriminative/resnet/hparams:lr=0.003/loss:huber")
    assert not same_model("discriminative/resnet/loss:huber", "discriminative/resnet/hparams:lr=0.003")


def test_representation_failure_steers_to_a_sibling_then_hypothesis_failure_lowers_the_prior():
    tree = T.Tree(seed=0)
    para = tree.add(T.ROOT, "generative", status="decision")
    cvae = tree.add(para.id, "generative/cvae")
    cvae.status, cvae.reward = "ok", 0.2
    T.backpropagate(tree, cvae.id, 0.2)
    recs = route_scored(tree, cvae.id, -0.05, 0.01, child_actions, same_model)
    assert recs[0]["level"] == "representation" and "sibling" in recs[0]["rule"]
    assert tree.nodes[cvae.id].blocked
    nxt = builtin_policy(tree, "", {})
    assert nxt.parent == para.id and nxt.actions == ["generative/flow-matching"]
    assert nxt.reason.startswith("routing:")
    flow = grow(tree, nxt)
    flow.status, flow.reward = "ok", 0.2
    T.backpropagate(tree, flow.id, 0.2)
    recs = route_scored(tree, flow.id, None, None, child_actions, same_model)
    hyp = [r for r in recs if r["level"] == "hypothesis"]
    assert hyp and tree.nodes[para.id].prior == T.HYPOTHESIS_PRIOR_FACTOR
    assert set(hyp[0]["evidence"]["failed_backbones"]) == {"generative/cvae", "generative/flow-matching"}
    # nothing is refined below a representation failure
    c = builtin_policy(tree, "", {})
    assert not c.actions[-1].startswith("generative/")


def test_time_limit_parsing():
    from harmonycell.tools.errors import InputError
    from harmonycell.tools.search.budget import parse_duration
    assert parse_duration("45m") == 2700 and parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90 and parse_duration("2") == 120 and parse_duration("none") is None
    with pytest.raises(InputError) as e:
        parse_duration("soon")
    assert "45m" in str(e.value)


def test_a_network_is_first_refined_as_the_residual_on_the_best_simple_model():
    """Once a network is trained, its first refinement learns what the best simple model (on
    validation) misses: on:nearest-gene when nearest-gene beat ridge, on:ridge otherwise."""
    for best, other in (("nearest-gene", "ridge"), ("ridge", "nearest-gene")):
        def reward(action: str) -> float:
            if action.startswith("simple/"):
                return 0.6 if action == f"simple/{best}" else 0.5
            return 0.4 + 0.01 * action.count("/")
        tree, choices = search(reward, 12)
        refined = [c for c in choices if T.level_of(c.actions[-1]) == "refinement"
                   and not c.actions[-1].startswith("simple/")]
        assert refined, [c.actions for c in choices]
        first = refined[0].actions[-1]
        assert first.endswith(f"/on:{best}") and "residual on the best simple model" in refined[0].reason
        assert not any(c.actions[-1].endswith(f"/on:{other}") for c in refined[:1])


def test_a_simple_model_best_on_validation_is_the_pick_and_the_report_says_so():
    tree = T.Tree()
    for action, val in (("simple/ridge", 0.71), ("simple/nearest-gene", 0.65),
                        ("discriminative/resnet", 0.69), ("discriminative/resnet/on:ridge", 0.70)):
        n = tree.add(T.ROOT, action)
        n.status, n.val_metric, n.reward = "ok", val, val
    best = tree.best()
    assert best.action == "simple/ridge"
    line = tree.pick_sentence(best.id)
    assert line.startswith("The pick is a simple (closed-form) model, `simple/ridge`")
    assert "`discriminative/resnet/on:ridge`, scored 0.7000" in line
    net = [n for n in tree.nodes.values() if n.action == "discriminative/resnet/on:ridge"][0]
    net.val_metric = 0.75
    assert tree.best().id == net.id
    assert tree.pick_sentence(net.id) == ("The pick is the network `discriminative/resnet/on:ridge` (validation "
                                          "0.7500); the best simple model, `simple/ridge`, scored 0.7100.")
