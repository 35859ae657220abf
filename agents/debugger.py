"""Debugger: a bounded ReAct loop (observe the failure, think of a fix, act by re-running)."""

from __future__ import annotations

import json

from harmonycell.agents.base import StepAgent
from harmonycell.agents.coder import execute_node
from harmonycell.agents.messages import NodeAbandoned, NodeExecuted, NodeFailed

MAX_STEPS = 2


def diagnose(status: str, tail: str, config: dict) -> tuple[str, dict] | None:
    """Builtin policy: a thought and a patched config for failures it knows, else None."""
    text = tail.lower()
    if status == "oom" or "out of memory" in text:
        return ("out of memory: halve the batch size",
                {**config, "batch_size": max(8, int(config.get("batch_size", 128)) // 2)})
    if "nan" in text or "inf" in text or "floatingpointerror" in text:
        return ("diverged: lower the learning rate ten-fold and use the Huber loss",
                {**config, "lr": float(config.get("lr", 1e-3)) / 10, "loss": "huber"})
    if status == "timeout":
        return ("ran out of time: cap epochs and tighten early stopping",
                {**config, "epochs": max(5, int(config.get("epochs", 100)) // 4), "patience": 3})
    return None


class Debugger(StepAgent):
    description_text = "Diagnoses a failed node and retries it with a fix, a bounded number of times."

    def on_NodeFailed(self, failed: NodeFailed) -> NodeExecuted | NodeAbandoned:
        node_dir = self.ctx.run.node_dir(failed.node_id)  # patch what failed, not a fresh draft
        code = (node_dir / "model.py").read_text()
        config = json.loads((node_dir / "config.json").read_text())
        status, tail, attempt = failed.status, failed.error_tail, failed.attempts
        for _ in range(MAX_STEPS):
            fix = diagnose(status, tail, config)
            self.ctx.transcript.append("event", self.name, "thought",
                                       {"observe": (tail.strip().splitlines() or [""])[-1],
                                        "think": fix[0] if fix else "no known fix"})
            if fix is None:
                break
            config = fix[1]
            attempt += 1
            result = execute_node(self, failed.node_id, failed.action, code, config, attempt)
            if isinstance(result, NodeExecuted):
                return result
            status, tail = result.status, result.error_tail
        last = (tail.strip().splitlines() or ["unknown error"])[-1]
        return NodeAbandoned(node_id=failed.node_id, action=failed.action, reason=last[:300],
                             attempts=attempt)
