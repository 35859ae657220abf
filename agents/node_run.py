"""One node outside a search, carried the way the search carries it.

``harmonycell train``, ``run --compare-sources`` and the benches train single action paths. They
do it in a small run folder of their own (task.yaml, transcript, tree.json, nodes/<id>/) through
``agents.search.carry_node`` -- the Coder, the executor, the Debugger, host scoring and the sha256
check -- and the Evaluator's final test beside the baselines, so what they report was produced
exactly as a search node's would be.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anndata import AnnData, read_h5ad
from rich.console import Console

from harmonycell.agents.context import RunContext
from harmonycell.agents.evaluator import Evaluator
from harmonycell.agents.messages import NodeAbandoned, NodePlan, NodeScored, SearchDone, TestScored
from harmonycell.agents.policies.llm import LLMConfig
from harmonycell.agents.search import carry_node, node_agents, record_outcome
from harmonycell.sandbox.backends import get_backend
from harmonycell.tools.data.taskdata import export_sandbox_data
from harmonycell.tools.errors import InputError
from harmonycell.tools.record.runfolder import RunConfig, RunFolder, check_h5ad, new_run_id
from harmonycell.tools.record.transcript import Transcript
from harmonycell.tools.search.tree import ROOT

@dataclass
class NodeRun:
    """A carried node: the outcome the Planner would have received, and its test beside the
    baselines (None when it was abandoned)."""

    run: RunFolder
    node_id: str
    outcome: NodeScored | NodeAbandoned
    test: TestScored | None

    @property
    def node_dir(self) -> Path:
        return self.run.node_dir(self.node_id)

    @property
    def ok(self) -> bool:
        return isinstance(self.outcome, NodeScored)


def _link_or_copy(src: Path, dst: Path) -> None:
    """The task's file inside the node run without copying gigabytes where a link will do."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a symlink still reads the same
        dst.symlink_to(Path(src).resolve())


def open_node_run(root: Path, task: AnnData | Path, *, backend: str = "auto", seed: int = 0,
                  epochs: int = 100, node_timeout_s: float = 3600.0, llm: dict | None = None,
                  gene_sets: Path | None = None, data_dir: Path | None = None,
                  **context: Any) -> RunContext:
    """A node run at ``root`` (created; must not hold one already) on a unified task -- an
    in-memory AnnData (written there) or a unified .h5ad (linked) -- with the sandbox data
    exported, or ``data_dir``'s linked when it was exported from the same task already.
    ``context`` goes to the RunContext (console, sink, progress)."""
    run = RunFolder(root)
    if run.task_yaml.exists():
        raise InputError("already holds a node run", where=str(run.root),
                         fix="choose a new --out folder, or remove this one")
    run.unify_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(task, AnnData):
        adata = task
        adata.write_h5ad(run.unified)
    else:
        _link_or_copy(Path(task), run.unified)
        adata = read_h5ad(run.unified)
    kind = (adata.uns.get("split_info") or {}).get("task")
    if not kind:
        raise InputError("the task's AnnData carries no task kind (uns['split_info']['task'])",
                         where=str(task if not isinstance(task, AnnData) else run.unified),
                         fix="unify it with `harmonycell unify --task ...`")
    if data_dir is None:
        export_sandbox_data(adata, run.sandbox_data)
    else:
        run.sandbox_data.parent.mkdir(parents=True, exist_ok=True)
        run.sandbox_data.symlink_to(Path(data_dir).resolve(), target_is_directory=True)
    cfg = RunConfig(run_id=f"node-{new_run_id()}", task=kind, inputs=[check_h5ad(run.unified)],
                    seed=seed, budget_nodes=1, use_kb=False, node_timeout_s=node_timeout_s, backend=backend,
                    llm=llm, epochs=epochs, gene_sets=str(Path(gene_sets).resolve()) if gene_sets else None)
    run.save_config(cfg)
    run.set_status("running")
    context.setdefault("console", Console(stderr=True))  # stdout stays the caller's (e.g. --json)
    ctx = RunContext(run=run, config=cfg, transcript=Transcript(run.root),
                     backend=get_backend(backend, allow_unwalled=llm is None),
                     llm=LLMConfig.model_validate(llm) if llm else None, **context)
    ctx.cache["adata"] = adata  # the Evaluator's copy: read once
    return ctx


def carry_action(ctx: RunContext, action: str, *, with_test: bool = True) -> NodeRun:
    """Plan ``action`` as the run's node, carry it to its score, record it on the tree, and (if it
    worked and ``with_test``) score it on the test split beside the baselines."""
    tree = ctx.search_tree()
    node = tree.add(ROOT, action, chosen_by="given")
    plan = NodePlan(node_id=node.id, action=action, parent=ROOT, reason="one node, given by the caller")
    ctx.say("harmonycell", plan)
    agents = node_agents(ctx)
    outcome = carry_node(ctx, agents, plan)
    record_outcome(tree, outcome)
    tree.save(ctx.run.tree_json)
    test = None
    if with_test and isinstance(outcome, NodeScored):
        evaluator: Evaluator = agents["Evaluator"]  # type: ignore[assignment]
        test = evaluator.on_SearchDone(SearchDone(best_node=node.id, n_nodes=1, reason="one node"))
        ctx.say(evaluator.name, test)
    ctx.run.set_status("complete" if isinstance(outcome, NodeScored) else "failed",
                       None if isinstance(outcome, NodeScored) else outcome.reason)
    return NodeRun(run=ctx.run, node_id=node.id, outcome=outcome, test=test)
