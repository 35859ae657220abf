"""Coder: turns a NodePlan into model code and runs it in the sandbox."""

from __future__ import annotations

import time
from pathlib import Path
from contextlib import nullcontext

from harmonycell.agents.base import StepAgent
from harmonycell.agents.messages import Artifact, NodeExecuted, NodeFailed, NodePlan
from harmonycell.sandbox.jobs import NodeJob
from harmonycell.agents.policies.coder import CodeRequest, make_coder
from harmonycell.tools.search.codegen import cap_epochs

PRED_FILES = {"val": "pred_val.npy", "test": "pred_test.npy"}


def execute_node(agent: StepAgent, node_id: str, action: str, code: str, config: dict,
                 attempt: int) -> NodeExecuted | NodeFailed:
    """Run code in the sandbox, record the call, and report what came out (shared with Debugger)."""
    ctx = agent.ctx
    node_dir = ctx.run.node_dir(node_id)
    if ctx.cancel.is_set():
        raise KeyboardInterrupt
    executor = ctx.get_executor()
    job = NodeJob(node_id=node_id, code=code, config=config, data_dir=ctx.run.sandbox_data, node_dir=node_dir,
                  timeout_s=ctx.config.node_timeout_s, run_id=ctx.config.run_id)
    worker = ctx.node_workers.get(node_id, 0)
    one_at_a_time = not executor.parallel

    def retried(why: str) -> None:  # a Ray worker died under the node: on the record, then once more
        ctx.transcript.append("event", agent.name, "node_retried",
                              {"node": node_id, "attempt": attempt, "lost": why,
                               "action": "submitted once more; Ray places it on a live node"},
                              worker=ctx.worker_label(node_id))
        ctx.console.print(f"[bold yellow]{node_id}[/]: lost its Ray worker ({why}); retrying once",
                          highlight=False)

    # one live bar at a time: with several nodes in flight, their NodePlan lines say when each starts
    bar = ctx.progress(node_dir, f"{node_id} {action}", int(config.get("epochs", 100))) \
        if one_at_a_time else nullcontext()
    t0 = time.monotonic()
    with bar:
        res, placed = executor.run(job, worker, cancel=ctx.cancel, on_retry=retried)
    # what the executor added to the sandbox's own wall time (shipping data and files, scheduling)
    overhead_s = round(max(0.0, time.monotonic() - t0 - res.wall_s), 3)
    if ctx.cancel.is_set():  # the job was killed because the user interrupted the run
        raise KeyboardInterrupt
    outputs = [o.path for o in res.outputs]
    where = {} if one_at_a_time else placed.model_dump(exclude={"worker"})
    ctx.tool_call(agent.name, "sandbox.run_training",
                  {"node": node_id, "action": action, "attempt": attempt, "backend": res.backend},
                  {"status": res.status, "wall_s": res.wall_s, "cpu_s": res.cpu_s, "exit_code": res.exit_code,
                   "outputs": outputs, "overhead_s": overhead_s, **where},
                  [ctx.artifact(node_dir / f) for f in ("model.py", "config.json")])
    missing = [f for f in PRED_FILES.values() if res.output(f) is None]
    if not res.ok or missing:
        tail = res.stderr_tail or res.stdout_tail
        if res.ok:
            tail += f"\nthe run finished but wrote no {', '.join(missing)}"
        return NodeFailed(node_id=node_id, action=action, status=res.status if not res.ok else "error",
                          error_tail=tail[-3000:], attempts=attempt)
    # sha256 as computed by the backend right after the run: the Evaluator checks files against it
    preds = {split: Artifact(path=ctx.rel(node_dir / f), sha256=res.output(f).sha256)
             for split, f in PRED_FILES.items()}
    return NodeExecuted(node_id=node_id, action=action, wall_s=res.wall_s, cpu_s=res.cpu_s, backend=res.backend,
                        code=Artifact(**ctx.artifact(node_dir / "model.py").model_dump()),
                        predictions=preds, attempts=attempt)


class Coder(StepAgent):
    description_text = "Writes model code for an action path and trains it in the sandbox."

    def __init__(self, ctx):
        super().__init__(ctx)

    def _symbols(self) -> list[str] | None:
        """The task genes' symbols, which a gene-set file names (var names may be Ensembl ids)."""
        import anndata

        var = anndata.read_h5ad(self.ctx.run.unified, backed="r").var
        return list(var["gene_symbol"].astype(str)) if "gene_symbol" in var else None

    def on_NodePlan(self, plan: NodePlan) -> NodeExecuted | NodeFailed:
        ctx = self.ctx
        session = ctx.llm_policy("coder")  # None once the LLM budget is spent: builtin templates
        policy = make_coder(session=session) if session else make_coder()
        gene_sets = Path(ctx.config.gene_sets) if ctx.config.gene_sets else None
        mc = policy.write(CodeRequest(action=plan.action, data_dir=ctx.run.sandbox_data, seed=ctx.config.seed,
                                      gene_sets=gene_sets, gene_symbols=self._symbols() if gene_sets else None))
        # who wrote the code and what it noted (an LLM's replies are each their own record)
        ctx.transcript.append("event", self.name, "write_model_outcome",
                              {"node": plan.node_id, "model": ctx.llm.model if session else None, "policy": mc.policy,
                               "fell_back": mc.fell_back, "attempts": mc.attempts, "notes": mc.notes})
        config = cap_epochs(mc.config, plan.action, ctx.config.epochs)
        return execute_node(self, plan.node_id, plan.action, mc.code, config, attempt=1)
