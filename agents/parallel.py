"""Several nodes in flight (``--workers N``, or a Ray cluster).

The Planner plans a node for every free worker, counting the nodes in flight as visits that
earned nothing (virtual loss, ``tools.search.tree.in_flight``) so that workers spread over the
tree. Each worker carries its node through the same routing table as the one-at-a-time
conversation (Coder, the Debugger when it fails, the Evaluator), every message recorded with
its node and worker. Results reach the Planner one at a time, in the order they finish; only
this thread changes the tree. A stop (budget, time limit) lets the nodes in flight finish.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from pydantic import BaseModel

from harmonycell.agents.context import RunContext
from harmonycell.agents.messages import NodeAbandoned, NodePlan, NodeScored, SearchDone


def carry_node(ctx: RunContext, agents: dict, plan: NodePlan) -> NodeScored | NodeAbandoned:
    """One node from its plan to the message that goes back to the Planner, by the routing table."""
    from harmonycell.agents.routing import next_speaker

    msg: BaseModel = plan
    while (target := next_speaker(msg)) != "Planner":
        if target not in agents:
            raise RuntimeError(f"a node's {type(msg).__name__} routes to {target}, outside a worker")
        agent = agents[target]
        msg = getattr(agent, f"on_{type(msg).__name__}")(msg)
        ctx.say(agent.name, msg)
    return msg


def search_in_parallel(planner) -> SearchDone:
    from harmonycell.agents.coder import Coder
    from harmonycell.agents.debugger import Debugger
    from harmonycell.agents.evaluator import Evaluator

    ctx = planner.ctx
    executor = ctx.get_executor()
    agents = {cls.__name__: cls(ctx) for cls in (Coder, Debugger, Evaluator)}
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
