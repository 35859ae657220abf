"""MCTS as data (SPEC section 5): the reward's time term, UCT with Q_mix, backpropagation, selection."""

import math

import pytest

from harmonycell.tools.search import tree as T


@pytest.mark.parametrize("t, expected", [
    (0.5, 1.0), (0.8, 1.0), (0.9, 0.9), (1.0, 0.8), (1.25, 0.65), (1.5, 0.5), (2.25, 0.25),
    (3.0, 0.0), (10.0, 0.0),
])
def test_f_time_piecewise(t, expected):
    assert T.f_time(t) == pytest.approx(expected)


def test_reward_weights_and_failure():
    assert T.reward(0.5, 10.0, 10.0) == pytest.approx(0.8 * 0.5 + 0.2 * 0.8)
    assert T.reward(0.5, 5.0, 10.0) == pytest.approx(0.8 * 0.5 + 0.2 * 1.0)
    assert T.reward(None, 5.0, 10.0) == 0.0  # a failed execution scores 0
    assert T.normalised_metric(-0.3) == 0.0 and T.normalised_metric(0.7) == 0.7
    assert T.normalised_metric(None) is None


def test_backprop_updates_visits_mean_and_max_to_root():
    tree = T.Tree()
    a = tree.add(T.ROOT, "discriminative/resnet")
    b = tree.add(a.id, "discriminative/resnet/loss:huber")
    T.backpropagate(tree, a.id, 0.4)
    T.backpropagate(tree, b.id, 0.8)
    root, na, nb = tree.nodes[T.ROOT], tree.nodes[a.id], tree.nodes[b.id]
    assert (root.visits, na.visits, nb.visits) == (2, 2, 1)
    assert na.q_mean == pytest.approx(0.6) and na.q_max == pytest.approx(0.8)
    assert na.q_mix == pytest.approx(0.7 * 0.8 + 0.3 * 0.6)


def test_uct_prefers_unvisited_then_better():
    fresh = T.Node(id="x", parent=T.ROOT, action="a")
    good = T.Node(id="y", parent=T.ROOT, action="b", visits=3, q_sum=2.4, q_max=0.9)
    poor = T.Node(id="z", parent=T.ROOT, action="c", visits=3, q_sum=0.3, q_max=0.2)
    assert T.uct(fresh, 6) > T.uct(good, 6) > T.uct(poor, 6)
    assert T.uct(good, 6) == pytest.approx(good.q_mix + math.sqrt(math.log(6) / (3 + T.EPS)))


def test_select_descends_by_uct_to_an_expandable_node():
    tree = T.Tree()
    a = tree.add(T.ROOT, "A")
    b = tree.add(T.ROOT, "B")
    for n, r in ((a, 0.2), (b, 0.9)):
        tree.nodes[n.id].status = "ok"
        T.backpropagate(tree, n.id, r)
    for _ in range(3):  # make the root itself non-expandable; B is clearly better
        T.backpropagate(tree, b.id, 0.9)
    chosen = T.select(tree, lambda n: n.id != T.ROOT)
    assert chosen == b.id


def test_abandoned_node_counts_against_itself_only():
    from harmonycell.tools.search.failure_routing import route_abandoned
    tree = T.Tree()
    p = tree.add(T.ROOT, "generative", status="decision")
    a = tree.add(p.id, "generative/cvae")
    tree.nodes[a.id].status = "ok"
    T.backpropagate(tree, a.id, 0.6)
    b = tree.add(p.id, "generative/flow-matching")
    before = {k: (n.visits, n.q_sum, n.q_max) for k, n in tree.nodes.items() if k != b.id}
    recs = route_abandoned(tree, b.id, "CUDA out of memory")
    assert tree.nodes[b.id].status == "failed" and tree.nodes[b.id].visits == 1
    assert {k: (n.visits, n.q_sum, n.q_max) for k, n in tree.nodes.items() if k != b.id} == before
    assert recs[0]["level"] == "implementation" and "this node only" in recs[0]["rule"]


def test_tree_round_trips_through_json(tmp_path):
    tree = T.Tree()
    n = tree.add(T.ROOT, "generative/cvae")
    m = tree.add(T.ROOT, "generative/flow-matching")
    tree.nodes[n.id].status, tree.nodes[n.id].reward, tree.nodes[n.id].val_metric = "ok", 0.5, 0.4
    tree.nodes[m.id].status, tree.nodes[m.id].reward = "failed", 0.0
    tree.t_root = 12.5
    T.backpropagate(tree, n.id, 0.5)
    tree.save(tmp_path / "tree.json")
    again = T.Tree.load(tmp_path / "tree.json")
    assert again == tree
    assert again.best().id == n.id  # a failed node is never the best
    assert {x.id for x in again.trained()} == {n.id, m.id}
