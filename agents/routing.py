"""Who speaks next: a pure function of the last message's type.

A routing table rather than an LLM selector makes the conversation deterministic, testable and
resumable. Message types missing from the table end the conversation.
"""

from __future__ import annotations

from pydantic import BaseModel

from harmonycell.agents import messages as m

ROUTES: dict[type[BaseModel], str] = {
    m.RunRequest: "DataAuditor",
    m.AuditDone: "Unifier",
    m.UnifyDone: "Planner",
    m.NodePlan: "Coder",
    m.NodeExecuted: "Evaluator",
    m.NodeFailed: "Debugger",
    m.NodeAbandoned: "Planner",
    m.NodeScored: "Planner",
    m.SearchDone: "Evaluator",
    m.TestScored: "Judge",
}

# What each agent may say; the team's graph is built from this and ROUTES.
PRODUCES: dict[str, tuple[type[BaseModel], ...]] = {
    "DataAuditor": (m.AuditDone,),
    "Unifier": (m.UnifyDone,),
    "Planner": (m.NodePlan, m.SearchDone),
    "Coder": (m.NodeExecuted, m.NodeFailed),
    "Debugger": (m.NodeExecuted, m.NodeAbandoned),
    "Evaluator": (m.NodeScored, m.TestScored),
    "Judge": (m.Verdict,),
}


# Chat mode puts the person between the data and the search, and between search rounds: they
# approve, size and steer it (an Approval carries their changes), or pass the result on to the test.
# Their Steer and Question messages are recorded, not routed.
CHAT_ROUTES: dict[type[BaseModel], str] = {**ROUTES, m.UnifyDone: "User", m.Approval: "Planner",
                                           m.SearchDone: "User", m.SearchReviewed: "Evaluator"}
CHAT_PRODUCES: dict[str, tuple[type[BaseModel], ...]] = {**PRODUCES, "User": (m.Approval, m.SearchReviewed)}


def next_speaker(content: BaseModel, routes: dict[type[BaseModel], str] = ROUTES) -> str | None:
    """The agent that handles ``content`` next, or None when the conversation is over."""
    return routes.get(type(content))
