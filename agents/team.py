"""The team: seven agents in an autogen GraphFlow whose edges are the routing table (which is
derived from the agents' own handlers, see ``agents.routing``).

A node's own messages (NodePlan -> Coder -> [Debugger] -> Evaluator -> back to the Planner) are
carried by ``agents.search.carry_node`` inside the Planner's search, one node or several at a
time; the table still names their routes, and the graph's edges for them stay unused."""

from __future__ import annotations

import asyncio
from typing import Sequence

from autogen_agentchat.base import ChatAgent, TaskResult
from autogen_agentchat.conditions import SourceMatchTermination
from autogen_agentchat.messages import StructuredMessage
from autogen_agentchat.teams import DiGraphBuilder, GraphFlow

from harmonycell.agents.auditor import DataAuditor
from harmonycell.agents.base import wrap
from harmonycell.agents.coder import Coder
from harmonycell.agents.context import RunContext
from harmonycell.agents.debugger import Debugger
from harmonycell.agents.evaluator import Evaluator
from harmonycell.agents.judge import Judge
from harmonycell.agents.messages import CONTENT_TYPES, RunRequest, Verdict
from harmonycell.agents.planner import Planner
from harmonycell.agents.routing import derive
from harmonycell.agents.unifier import Unifier

# The team, in the order the conversation first reaches them.
TEAM: tuple[type, ...] = (DataAuditor, Unifier, Planner, Coder, Debugger, Evaluator, Judge)
ROUTES, PRODUCES = derive(TEAM)


def _is(t):
    return lambda msg: isinstance(msg, StructuredMessage) and isinstance(msg.content, t)


def build_team(ctx: RunContext, extra: Sequence[ChatAgent] = (),
               routes: dict = ROUTES, produces: dict = PRODUCES) -> GraphFlow:
    """The graph's edges are exactly ``routes`` restricted to what each agent ``produces``."""
    agents = [cls(ctx) for cls in TEAM]
    builder = DiGraphBuilder()
    for a in [*agents, *extra]:
        builder.add_node(a)
    for source, kinds in produces.items():
        for kind in kinds:
            target = routes.get(kind)
            if target is not None:
                # "any": a node with several senders runs as soon as one of them routes to it
                builder.add_edge(source, target, condition=_is(kind), activation_condition="any")
    builder.set_entry_point(TEAM[0].__name__)
    return GraphFlow(
        participants=builder.get_participants(),
        graph=builder.build(),
        termination_condition=SourceMatchTermination(["Judge"]),
        custom_message_types=[StructuredMessage[t] for t in CONTENT_TYPES],
    )


async def _run(ctx: RunContext, request: RunRequest, team: GraphFlow) -> Verdict | None:
    verdict = None
    async for item in team.run_stream(task=wrap(request, "user")):
        if isinstance(item, TaskResult):
            break
        if isinstance(item, StructuredMessage) and isinstance(item.content, Verdict):
            verdict = item.content
    return verdict


def run_team(ctx: RunContext, request: RunRequest, team: GraphFlow | None = None) -> Verdict:
    """Run the conversation to its end; re-raise the first agent's failure as itself."""
    ctx.say("user", request)
    try:
        verdict = asyncio.run(_run(ctx, request, team or build_team(ctx)))
    except BaseException:
        if ctx.failure is not None:
            raise ctx.failure from None
        raise
    if ctx.failure is not None:
        raise ctx.failure
    if verdict is None:
        raise RuntimeError("the conversation ended without a verdict")
    return verdict
