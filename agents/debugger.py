"""Debugger: a bounded ReAct loop (observe the failure, think of a fix, act, re-run).

The loop and both policies live in ``agents.policies.debugger``; this agent wires them to the
node's files, the sandbox (through the Coder's ``execute_node``) and the transcript.
"""

from __future__ import annotations

import json

from harmonycell.agents.base import StepAgent
from harmonycell.agents.coder import execute_node
from harmonycell.agents.messages import NodeAbandoned, NodeExecuted, NodeFailed
from harmonycell.agents.policies.debugger import (MAX_STEPS, LLMDebugPolicy, RunOutcome, observe,
                                                  repair)


class Debugger(StepAgent):
    description_text = "Diagnoses a failed node and retries it with a fix, a bounded number of times."

    def on_NodeFailed(self, failed: NodeFailed) -> NodeExecuted | NodeAbandoned:
        ctx = self.ctx
        node_dir = ctx.run.node_dir(failed.node_id)  # patch what failed, not a fresh draft
        code = (node_dir / "model.py").read_text()
        config = json.loads((node_dir / "config.json").read_text())
        attempt = failed.attempts

        def run(new_code: str, new_config: dict) -> RunOutcome:
            nonlocal attempt
            attempt += 1
            res = execute_node(self, failed.node_id, failed.action, new_code, new_config, attempt)
            if isinstance(res, NodeExecuted):
                return RunOutcome(ok=True, status="ok", tail="", result=res)
            return RunOutcome(ok=False, status=res.status, tail=res.error_tail)

        def record(step: str, payload: dict) -> None:
            ctx.transcript.append("event", self.name, step, {"node": failed.node_id, **payload})

        session = ctx.llm_policy("debugger")
        out = repair(observe(failed.status, failed.error_tail, code, config, ctx.run.sandbox_data), run,
                     data_dir=ctx.run.sandbox_data, llm=LLMDebugPolicy(session) if session else None,
                     max_steps=MAX_STEPS, record=record)
        if out.repaired:
            return out.result
        reason = out.last_error or "unknown error"
        if not out.actions:
            reason = f"no known fix: {reason}"
        return NodeAbandoned(node_id=failed.node_id, action=failed.action, reason=reason[:300],
                             attempts=attempt)
