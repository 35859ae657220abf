"""The Planner's LLM policy: the next expansion proposed by a model, validated by the grammar.

The model sees the search tree as data (each node's action, status, reward, validation metric,
visits), the task profile and the action space with its parameter ranges, and replies with one
JSON object: which node to expand, the child action (a backbone under the root, or one
refinement segment within its ranges under a trained node) and a one-line rationale. A reply the
grammar refuses (unknown node, a path that does not extend the node, a value out of range, an
action already tried) goes back with the reason; after ``max_asks`` replies the builtin choice
(UCT) stands, and the fallback is recorded.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from pydantic import BaseModel

from harmonycell.agents.policies.llm import ReplyInvalid
from harmonycell.tools.errors import HarmonyCellError
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.actions import SEP, describe, parse_action

SYSTEM = ("You steer a tree search over model architectures for single-cell perturbation response "
          "prediction. Reply with one JSON object and nothing else of substance.")
REASK = 'Reply again with one ```json block: {"parent": NODE_ID, "action": FULL_ACTION_PATH, "rationale": ONE_LINE}.'


class Expansion(BaseModel):
    parent: str
    action: str
    rationale: str


def tree_as_data(tree: T.Tree) -> list[dict]:
    return [{"id": n.id, "parent": n.parent, "action": n.action or "(root)", "status": n.status,
             "reward": n.reward, "val_DeltaPCC": n.val_metric, "visits": n.visits, "wall_s": n.wall_s}
            for n in tree.nodes.values()]


def render_prompt(tree: T.Tree, menu: dict[str, list[str]], profile: dict) -> str:
    return (
        f"Task profile: {json.dumps(profile, default=str)}\n\n"
        f"Action space (paths are paradigm/backbone[/refinement...]; values must lie in the ranges):\n"
        f"{json.dumps(describe())}\n\n"
        f"Search tree so far:\n{json.dumps(tree_as_data(tree))}\n\n"
        f"Nodes that may be expanded now, with example children (any child within the ranges is "
        f"allowed, not only these):\n{json.dumps(menu)}\n\n"
        'Choose the next node to train. Reply with ```json {"parent": "<node id>", "action": '
        '"<the full action path of the new child>", "rationale": "<one line>"}```.'
    )


def parse_expansion(reply: str, tree: T.Tree, menu: dict[str, list[str]]) -> Expansion:
    """An ``Expansion`` the action grammar accepts, or ``ReplyInvalid`` saying why not."""
    blocks = re.findall(r"```(?:json)?[ \t]*\n(.*?)```", reply, re.S)
    text = blocks[-1] if blocks else reply[reply.find("{"): reply.rfind("}") + 1]
    try:
        exp = Expansion.model_validate_json(text)
    except ValueError as e:
        raise ReplyInvalid(f"not a JSON object with parent, action and rationale ({str(e).splitlines()[0]})") from None
    if exp.parent not in menu:
        raise ReplyInvalid(f"node {exp.parent!r} cannot be expanded now; choose one of {sorted(menu)}")
    try:
        path = parse_action(exp.action)
    except HarmonyCellError as e:
        raise ReplyInvalid(f"action {exp.action!r} is not in the grammar: {e.one_line()}") from None
    action = path.text()
    parent = tree.nodes[exp.parent]
    if exp.parent == T.ROOT:
        if path.backbone is None or path.refinements:
            raise ReplyInvalid("under the root the child must be exactly paradigm/backbone")
    else:
        if not action.startswith(parent.action + SEP) or path.depth != parse_action(parent.action).depth + 1:
            raise ReplyInvalid(f"a child of {exp.parent} must be {parent.action!r} followed by exactly "
                               f"one refinement segment")
    # under the root the children are paradigm decisions: a backbone is tried wherever it sits
    tried = ({n.action for n in tree.nodes.values() if T.level_of(n.action) == "backbone"}
             if exp.parent == T.ROOT else {tree.nodes[c].action for c in parent.children})
    if action in tried:
        raise ReplyInvalid(f"{action!r} was already tried under {exp.parent}")
    return Expansion(parent=exp.parent, action=action, rationale=exp.rationale.strip().splitlines()[0][:200]
                     if exp.rationale.strip() else "(no rationale)")


def propose_expansion(ctx, tree: T.Tree, untried: Callable[[T.Node], list[str]]) -> Expansion | None:
    """The LLM's next expansion, or None (no LLM for the planner, budget spent, or fallback)."""
    session = ctx.llm_policy("planner")
    if session is None:
        return None
    menu = {n.id: untried(n)[:8] for n in tree.nodes.values()
            if (n.id == T.ROOT or n.status == "ok") and untried(n)}
    if not menu:
        return None
    profile = {"task": ctx.config.task, "budget_nodes": ctx.config.budget_nodes,
               "trained_nodes": len(tree.trained()),
               # what the knowledge base retrieved (SPEC 6): its mode and the action priors it gave
               "knowledge_base": {"mode": (tree.kb or {}).get("mode", "tabula rasa"),
                                  "action_priors": dict(sorted(tree.priors.items(), key=lambda kv: -kv[1])[:12])}}
    out = session.ask("Planner", "next_expansion", SYSTEM, render_prompt(tree, menu, profile),
                      lambda r: parse_expansion(r, tree, menu), reask=REASK)
    if out.value is None:
        ctx.transcript.append("event", "Planner", "fallback", {"to": "builtin", "why": out.why_failed()})
        return None
    ctx.transcript.append("event", "Planner", "llm_expansion", out.value.model_dump())
    return out.value
