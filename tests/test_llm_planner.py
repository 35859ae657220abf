"""The Planner's LLM replies are held to the action grammar: each kind of invalid expansion is
refused with a reason the model can act on; a valid refinement within ranges is accepted."""

import json

import pytest

from harmonycell.agents.policies.llm import ReplyInvalid
from harmonycell.agents.policies.planner import parse_expansion, render_prompt
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.actions import child_actions, root_actions


@pytest.fixture
def tree():
    t = T.Tree()
    n = t.add(T.ROOT, root_actions()[0])
    n.status, n.reward, n.visits = "ok", 0.4, 1
    return t


def reply(parent, action, why="try it"):
    return "```json\n" + json.dumps({"parent": parent, "action": action, "rationale": why}) + "\n```"


def menu_of(t):
    return {T.ROOT: root_actions()[1:], "n001": child_actions(t.nodes["n001"].action)}


def test_valid_refinement_within_ranges_is_accepted(tree):
    action = f"{tree.nodes['n001'].action}/hparams:lr=0.0005"
    exp = parse_expansion(reply("n001", action, "lower lr\nsecond line"), tree, menu_of(tree))
    assert exp.parent == "n001" and exp.action == action and exp.rationale == "lower lr"


@pytest.mark.parametrize("parent,action,reason", [
    ("n999", None, "cannot be expanded now"),
    (T.ROOT, "discriminative/transformer9", "not in the grammar"),
    ("n001", "{a}/hparams:lr=50", "not in the grammar"),  # out of range
    ("n001", "{a}/hparams:lr=0.0005/loss:huber", "exactly one refinement"),
    (T.ROOT, "{a}/hparams:lr=0.0005", "exactly paradigm/backbone"),
    (T.ROOT, "{a}", "already tried"),
])
def test_invalid_expansions_are_refused_with_the_reason(tree, parent, action, reason):
    a = tree.nodes["n001"].action
    action = (action or a).format(a=a)
    with pytest.raises(ReplyInvalid, match=reason):
        parse_expansion(reply(parent, action), tree, menu_of(tree))


def test_prompt_carries_the_tree_the_menu_and_the_ranges(tree):
    text = render_prompt(tree, menu_of(tree), {"task": "unseen-perturbation"})
    assert '"reward": 0.4' in text and "n001" in text and '"low"' in text and "unseen-perturbation" in text
