"""The search: the Planner's nodes carried from plan to score, one at a time or several at once.

``carry_node`` is the one way a node goes from its plan to its score: the Coder writes the code and
runs it through the executor (local or Ray) in the sandbox, the Debugger repairs a failure, the
Evaluator scores the predictions on the host and checks them against the sha256 the sandbox
recorded. ``run_search`` drives it for the Planner. With several workers (``--workers N``, or a
Ray cluster) the Planner plans a node for every free worker, counting the nodes in flight as
visits that earned nothing (virtual loss, ``tools.search.tree.in_flight``) so that workers spread
over the tree; results reach the Planner one at a time, in the order they finish; only the
Planner's thread changes the tree. A stop (budget, time limit) lets the nodes in flight finish.
When the search ends, ``ensemble_candidate`` builds the ensemble of its best nodes on the host
(``tools.search.ensemble``), a candidate for the pick beside them, and ``pick_rule`` scores every
candidate's saved validation prediction per query for the one-standard-error rule
(``tools.search.selection``), whose choice ``Tree.pick`` returns.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import anndata as ad
import numpy as np
from pydantic import BaseModel

from harmonycell.agents.base import StepAgent
from harmonycell.agents.coder import Coder
from harmonycell.agents.context import RunContext
from harmonycell.agents.debugger import Debugger
from harmonycell.agents.evaluator import Evaluator
from harmonycell.agents.messages import NodeAbandoned, NodePlan, NodeScored, SearchDone
from harmonycell.agents.routing import derive, next_speaker
from harmonycell.tools.errors import InputError
from harmonycell.tools.evaluation.metrics import AGGREGATE_OF, headline_of, score
from harmonycell.tools.evaluation.pseudobulk import targets_for
from harmonycell.tools.record import atomic
from harmonycell.tools.search.ensemble import ENSEMBLE_DIR, PRED, ensemble_of_tree, member_prediction
from harmonycell.tools.search.tree import ENSEMBLE_ID, Node, Tree
from harmonycell.tools.tasks.registry import task_kind

# who carries a node, and the routes between them (read from their handlers)
NODE_AGENTS: tuple[type[StepAgent], ...] = (Coder, Debugger, Evaluator)
NODE_ROUTES, _ = derive(NODE_AGENTS)
OUTCOMES = (NodeScored, NodeAbandoned)  # what goes back to the Planner


def node_agents(ctx: RunContext) -> dict[str, StepAgent]:
    return {cls.__name__: cls(ctx) for cls in NODE_AGENTS}


def carry_node(ctx: RunContext, agents: dict[str, StepAgent], plan: NodePlan) -> NodeScored | NodeAbandoned:
    """One node from its plan to the message that goes back to the Planner, every message recorded."""
    msg: BaseModel = plan
    while not isinstance(msg, OUTCOMES):
        target = next_speaker(msg, NODE_ROUTES)
        if target is None:
            raise RuntimeError(f"a node's {type(msg).__name__} has no agent to carry it on")
        agent = agents[target]
        msg = getattr(agent, f"on_{type(msg).__name__}")(msg)
        ctx.say(agent.name, msg)
    return msg


def record_outcome(tree: Tree, outcome: NodeScored | NodeAbandoned) -> Node:
    """What a node's execution said, written onto its tree node (the Judge and the report read it
    there): status, reward, validation headline, costs, backend, attempts, sha256s, or the error."""
    node = tree.nodes[outcome.node_id]
    node.attempts = outcome.attempts
    if isinstance(outcome, NodeAbandoned):
        node.status, node.error_tail = "failed", outcome.reason
        return node
    node.status, node.reward = "ok", outcome.reward
    node.val_metric = headline_of(outcome.metrics)[1]  # the fallback where the headline is undefined
    node.wall_s = outcome.metrics.get("wall_s")
    node.cpu_s = outcome.metrics.get("cpu_s")
    node.backend = outcome.backend
    node.predictions = {split: a.sha256 for split, a in outcome.predictions.items()}
    node.metrics = {k: v for k, v in outcome.metrics.items() if k not in ("wall_s", "cpu_s")}
    return node


def _val_targets(ctx: RunContext):
    """The validation targets: the Evaluator's cached copy where it has one."""
    if "targets_val" not in ctx.cache:
        if "adata" not in ctx.cache:
            ctx.cache["adata"] = ad.read_h5ad(ctx.run.unified)
        ctx.cache["targets_val"] = targets_for(ctx.cache["adata"], "val")
    return ctx.cache["targets_val"]


def ensemble_candidate(ctx: RunContext, tree: Tree, source: str) -> None:
    """The ensemble of the tree's best nodes, built on the host from their sandbox-written
    predictions (each checked against its recorded sha256), onto the tree (``tree.ensemble``, or
    ``tree.ensemble_note`` saying why there is none) and the transcript; then the one-standard-error
    rule on every candidate (``pick_rule``), so that ``Tree.pick`` is the rule's choice from here on.
    The caller saves the tree."""
    try:
        # folds keep one held-out unit together: the task kind's unit, as a query names it
        ens, why = ensemble_of_tree(tree, ctx.run.nodes_dir, lambda: _val_targets(ctx), seed=tree.seed,
                                    unit=task_kind(ctx.config.task).inner_unit)
    except InputError as exc:  # a member's file changed since it was scored: no ensemble from it
        ens, why = None, exc.one_line()
    tree.ensemble, tree.ensemble_note = ens, why or None
    pick_rule(ctx, tree, source)
    content = {"built": True, **ens.model_dump(), "picked": tree.pick() == ENSEMBLE_ID} if ens else {"built": False, "why": why}
    content["line"] = tree.ensemble_line()
    ctx.transcript.append("event", source, "ensemble", content)


def per_query_values(ctx: RunContext, tree: Tree, metric: str) -> dict[str, list[float] | None]:
    """Each pick candidate's per-query validation ``metric``, scored on the host from its saved
    validation prediction (a node's checked against the sha256 the sandbox recorded; the
    ensemble's cross-fitted one). None: its file is missing or changed, or the value is undefined
    on some query."""
    column = AGGREGATE_OF[metric]
    out: dict[str, list[float] | None] = {}
    for cid, _, _ in tree.pick_candidates():
        try:
            if cid == ENSEMBLE_ID:
                path = ctx.run.nodes_dir / ENSEMBLE_DIR / PRED["val"]
                if (tree.ensemble is None or not path.is_file()
                        or atomic.sha256_file(path) != tree.ensemble.predictions.get("val")):
                    out[cid] = None
                    continue
                pred = np.load(path)
            else:
                pred = member_prediction(tree.nodes[cid], ctx.run.nodes_dir, "val")
            rows = score(_val_targets(ctx), pred).per_perturbation
        except InputError:  # a file that is not the recorded one cannot be compared
            out[cid] = None
            continue
        vals = [r.metrics.get(column) for r in rows]
        out[cid] = None if any(v is None for v in vals) else [float(v) for v in vals]
    return out


def pick_rule(ctx: RunContext, tree: Tree, source: str) -> None:
    """The one-standard-error rule on the pick's candidates (``Tree.record_pick_rule``), onto the
    tree and the transcript. The caller saves the tree."""
    best = tree.validation_pick()
    if best is None:
        tree.pick_rule = None
        return
    metric = (tree.ensemble.val_metric_name if best == ENSEMBLE_ID
              else headline_of(tree.nodes[best].metrics)[0])
    rule = tree.record_pick_rule(per_query_values(ctx, tree, metric), metric)
    content = {**rule.model_dump(), "line": tree.pick_rule_sentence(rule.picked)} if rule else {"applied": False}
    content["picked"] = tree.pick()
    ctx.transcript.append("event", source, "pick_rule", content)


def run_search(planner) -> SearchDone:
    """Plan, carry and apply nodes until the Planner says the search is done."""
    ctx = planner.ctx
    agents = node_agents(ctx)
    if not ctx.get_executor().parallel:
        nxt = planner._next(planner._tree())
        while isinstance(nxt, NodePlan):
            ctx.say(planner.name, nxt)
            outcome = carry_node(ctx, agents, nxt)
            nxt = getattr(planner, f"on_{type(outcome).__name__}")(outcome)
        return nxt
    return _in_parallel(planner, agents)


def _in_parallel(planner, agents: dict[str, StepAgent]) -> SearchDone:
    ctx = planner.ctx
    executor = ctx.get_executor()
    # loaded once here, not by several workers at once
    agents["Evaluator"].adata()
    agents["Evaluator"]._train_mean_val()
    slots = [{"worker": f"w{s.worker}", "cores": list(s.cores), "gpus": s.gpu_ids}
             for s in getattr(executor, "slots", [])]
    ctx.transcript.append("event", planner.name, "parallel_search",
                          {"workers": executor.workers, "executor": executor.name, "slots": slots})
    ctx.console.print(f"[bold]parallel search[/] {executor.workers} worker(s) on the {executor.name} executor",
                      highlight=False)
    free = list(range(executor.workers))
    running: dict[Future, NodePlan] = {}
    result: SearchDone | None = None
    with ThreadPoolExecutor(max_workers=executor.workers, thread_name_prefix="node") as pool:
        while True:
            while free and result is None:
                tree = planner._tree()
                nxt = planner._next(tree, busy=frozenset(p.node_id for p in running.values()))
                if nxt is None:
                    break
                if isinstance(nxt, SearchDone):
                    result = nxt
                    break
                ctx.node_workers[nxt.node_id] = free.pop(0)
                ctx.say(planner.name, nxt)
                running[pool.submit(carry_node, ctx, agents, nxt)] = nxt
            if not running:
                if result is not None:
                    return result
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                plan = running.pop(future)
                outcome = future.result()  # a worker's failure is the run's (after the others end)
                tree = planner._tree()
                planner.apply(tree, outcome)
                tree.save(ctx.run.tree_json)
                free.append(ctx.node_workers.pop(plan.node_id))
