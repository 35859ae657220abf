"""The Planner's LLM replies are held to the action grammar: each kind of invalid expansion is
refused with a reason the model can act on; a valid refinement within ranges is accepted."""

import json

import pytest

from harmonycell.agents.policies.llm import ReplyInvalid
from harmonycell.agents.policies.planner import parse_expansion, render_prompt
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.actions import child_actions, closed_form


TRAINED = "n002"  # root -> n001 (paradigm decision) -> n002 (backbone, trained)


def backbones() -> list[str]:
    """The networks (a closed-form backbone has no refinement to propose)."""
    return [b for p in child_actions("") for b in child_actions(p) if not closed_form(b)]


@pytest.fixture
def tree():
    t = T.Tree()
    paradigm = t.add(T.ROOT, backbones()[0].split("/")[0], status="decision")
    n = t.add(paradigm.id, backbones()[0])
    n.status, n.reward, n.visits = "ok", 0.4, 1
    return t


def reply(parent, action, why="try it"):
    return "```json\n" + json.dumps({"parent": parent, "action": action, "rationale": why}) + "\n```"


def menu_of(t):
    return {T.ROOT: backbones()[1:], TRAINED: child_actions(t.nodes[TRAINED].action)}


def test_valid_refinement_within_ranges_is_accepted(tree):
    action = f"{tree.nodes[TRAINED].action}/hparams:lr=0.0005"
    exp = parse_expansion(reply(TRAINED, action, "lower lr\nsecond line"), tree, menu_of(tree))
    assert exp.parent == TRAINED and exp.action == action and exp.rationale == "lower lr"


@pytest.mark.parametrize("parent,action,reason", [
    ("n999", None, "cannot be expanded now"),
    (T.ROOT, "discriminative/transformer9", "not in the grammar"),
    (TRAINED, "{a}/hparams:lr=50", "not in the grammar"),  # out of range
    (TRAINED, "{a}/hparams:lr=0.0005/loss:huber", "exactly one refinement"),
    (T.ROOT, "{a}/hparams:lr=0.0005", "exactly paradigm/backbone"),
    (T.ROOT, "{a}", "already tried"),
])
def test_invalid_expansions_are_refused_with_the_reason(tree, parent, action, reason):
    a = tree.nodes[TRAINED].action
    action = (action or a).format(a=a)
    with pytest.raises(ReplyInvalid, match=reason):
        parse_expansion(reply(parent, action), tree, menu_of(tree))


def test_prompt_carries_the_tree_the_menu_and_the_ranges(tree):
    text = render_prompt(tree, menu_of(tree), {"task": "unseen-perturbation"})
    assert '"reward": 0.4' in text and TRAINED in text and '"low"' in text and "unseen-perturbation" in text
