"""Planner: hierarchical Monte Carlo tree search (SPEC 4-6, 10) over the action space.

Each handler loads the tree (data), applies what happened (a score, an abandonment), routes the
outcome (``failure_routing``), then asks the policy for the next expansion. The policy is one
function, ``choose_next(tree, profile, priors, menu) -> Choice | None``: builtin hierarchical MCTS
(``tree.choose_expansion``); another policy (an LLM's) can take its place. ``menu`` is the action
space less what the person excluded (``RunConfig.exclude``), so excluded paradigms and backbones
are never proposed.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Callable

import anndata as ad

from harmonycell.agents.base import StepAgent
from harmonycell.agents.policies.planner import propose_expansion
from harmonycell.agents.search import ensemble_candidate, record_outcome, run_search
from harmonycell.agents.messages import Approval, NodeAbandoned, NodePlan, NodeScored, SearchDone, UnifyDone
from harmonycell.tools.record.rerun_compare import RESUMED_PLAN
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.actions import child_actions, closed_form, not_for, parse_action
from harmonycell.tools.search.budget import estimate_node_seconds, fmt_duration, nodes_that_fit
from harmonycell.tools.data.taskdata import load_meta
from harmonycell.tools.search.failure_routing import reopen_best, route_abandoned, route_scored
from harmonycell.tools.search.knowledge import (KnowledgeBase, NodeRecord, RunRecord, action_priors, embed,
                                                scope_of_run, task_profile_text)

Policy = Callable[[T.Tree, str, dict, Callable[[str], list[str]]], "T.Choice | None"]
Menu = Callable[[str], list[str]]


@lru_cache(maxsize=4096)
def _resolved(action: str) -> tuple:
    p = parse_action(action)
    return (p.backbone, tuple(sorted(p.resolved().items()))) if p.backbone else (action,)


def same_model(a: str, b: str) -> bool:
    """Two paths that train the same model (refinements in another order, or a move back)."""
    return a != b and T.level_of(a) == T.level_of(b) == "refinement" and _resolved(a) == _resolved(b)


def excluding(menu: Menu, banned: set[str]) -> Menu:
    """``menu`` without actions under a ``banned`` paradigm or backbone name; a paradigm whose
    backbones are all banned is dropped too (it would have nothing to offer)."""
    if not banned:
        return menu

    def filtered(action: str) -> list[str]:
        out = [a for a in menu(action) if not banned & set(a.split("/")[:2])]
        return [a for a in out if T.level_of(a) != "paradigm" or filtered(a)]
    return filtered


def builtin_policy(tree: T.Tree, profile: str, priors: dict, menu: Menu = child_actions) -> T.Choice | None:
    """Hierarchical MCTS: UCT (Q_mix) at every level, expansion by the prior."""
    return T.choose_expansion(tree, menu, priors, same_model)


class Planner(StepAgent):
    description_text = "Chooses which architecture / refinement to train next (hierarchical MCTS)."

    def __init__(self, ctx, policy: Policy = builtin_policy):
        super().__init__(ctx)
        self.policy = policy

    def _tree(self) -> T.Tree:
        return self.ctx.search_tree()

    def _menu(self) -> Menu:
        """The action space the search may use: paradigms/backbones the person ruled out, and those
        that cannot answer this task kind, are gone."""
        return excluding(child_actions, set(self.ctx.config.exclude) | not_for(self.ctx.config.task))

    def _trace(self, records: list[dict]) -> None:
        for rec in records:
            self.ctx.transcript.append("event", self.name, "refinement_trace", rec)
            if rec["level"] != rec.get("node_level", "") and "no failure" not in rec["rule"]:
                self.ctx.console.print(f"[bold]routing[/] {rec['level']}: {rec['rule']} -> {rec['action_taken']}",
                                       highlight=False)

    # ------------------------------------------------------------------ search start

    def _adata(self):
        if "adata" not in self.ctx.cache:
            self.ctx.cache["adata"] = ad.read_h5ad(self.ctx.run.unified)
        return self.ctx.cache["adata"]

    def _profile(self) -> str:
        if "task_profile" not in self.ctx.cache:
            self.ctx.cache["task_profile"] = task_profile_text(self._adata(), self.ctx.config.task)
        return self.ctx.cache["task_profile"]

    def _start(self, tree: T.Tree) -> None:
        """Once per run: knowledge-base retrieval, then the time estimate, both on the record."""
        cfg = self.ctx.config
        tree.seed, tree.started_at = cfg.seed, time.time()
        if cfg.kb_replay is not None:  # replay --rerun: the recorded retrieval, not today's KB
            tree.kb, tree.priors = dict(cfg.kb_replay["kb"]), dict(cfg.kb_replay.get("priors") or {})
            self.ctx.transcript.append("event", self.name, "knowledge_base",
                                       {**tree.kb, "priors": tree.priors, "replayed": True})
        elif cfg.use_kb:
            kb = KnowledgeBase(cfg.kb_path)
            profile = self._profile()
            retrieval = kb.retrieve(embed([profile])[0], scope_of_run(self.ctx.run.root))
            tree.kb = {**retrieval.summary(), "path": str(kb.path)}
            tree.priors = (action_priors(retrieval.entries, retrieval.expert_wins)
                           if retrieval.mode == "warm start" else {})
            self.ctx.transcript.append("event", self.name, "knowledge_base",
                                       {**tree.kb, "profile": profile, "priors": tree.priors})
            self.ctx.console.print(f"[bold]knowledge base[/] {kb.path}: {retrieval.mode} ({retrieval.reason})"
                                   + (f"; {len(retrieval.not_read)} stored result(s) not read: they share "
                                      "this run's test units" if retrieval.not_read else ""), highlight=False)
        else:
            tree.kb = {"mode": "tabula rasa", "reason": "--no-kb: the knowledge base is not used"}
            self.ctx.transcript.append("event", self.name, "knowledge_base", tree.kb)
        meta_cells, n_genes = self._size()
        per_node = estimate_node_seconds(meta_cells, n_genes, cfg.epochs)
        fit = nodes_that_fit(cfg.time_limit_s, per_node, cfg.budget_nodes)
        limit = fmt_duration(cfg.time_limit_s) if cfg.time_limit_s else "none"
        line = (f"~{fmt_duration(per_node)} per node ({meta_cells} training cells x {n_genes} genes, "
                f"<= {cfg.epochs} epochs); time limit {limit}, budget {cfg.budget_nodes} node(s): "
                f"about {fit} node(s) fit")
        self.ctx.transcript.append("event", self.name, "search_budget",
                                   {"per_node_s": round(per_node, 1), "nodes_that_fit": fit,
                                    "time_limit_s": cfg.time_limit_s, "budget_nodes": cfg.budget_nodes,
                                    "train_cells": meta_cells, "genes": n_genes, "epochs": cfg.epochs})
        self.ctx.console.print(f"[bold]search budget[/] {line}")

    def _measured_budget(self, tree: T.Tree, first: T.Node) -> None:
        """After the first node: the estimate against what it took here, and what still fits."""
        cfg = self.ctx.config
        if not first.wall_s or tree.started_at is None:
            return
        elapsed = time.time() - tree.started_at
        left = (cfg.time_limit_s - elapsed) if cfg.time_limit_s else None
        workers = self.ctx.get_executor().workers
        more = nodes_that_fit(left, first.wall_s / workers, cfg.budget_nodes - 1) if left and left > 0 else 0
        self.ctx.transcript.append("event", self.name, "search_budget_measured",
                                   {"first_node_wall_s": first.wall_s, "first_node_cpu_s": first.cpu_s,
                                    "elapsed_s": round(elapsed, 1), "more_nodes_that_fit": more if left else None})
        if left:
            self.ctx.console.print(f"[bold]search budget[/] the first node took {fmt_duration(first.wall_s)}; "
                                   f"about {more} more node(s) fit in the {fmt_duration(max(left, 0))} left",
                                   highlight=False)

    def _size(self) -> tuple[int, int]:
        meta = load_meta(self.ctx.run.sandbox_data)
        return int(meta["n_train_cells"]), len(meta["genes"])

    # ------------------------------------------------------------------ stopping

    def _stop(self, tree: T.Tree, busy: int = 0) -> tuple[str, bool] | None:
        """Why no new node may start (None: one may); ``busy``: nodes in flight (they count
        against the budget, and run to their end)."""
        cfg = self.ctx.config
        n_done = len(tree.trained())
        if n_done + busy >= cfg.budget_nodes:
            return f"budget of {cfg.budget_nodes} node(s) spent", False
        if cfg.time_limit_s and tree.started_at is not None and n_done > 0:  # always one node
            elapsed = time.time() - tree.started_at
            walls = [n.wall_s for n in tree.trained() if n.wall_s]
            per_node = sum(walls) / len(walls) if walls else 0.0
            # stop when the limit is reached, or when the next node would overrun it by more
            # than half a node (measured on this run's nodes)
            if elapsed >= cfg.time_limit_s or elapsed + 0.5 * per_node > cfg.time_limit_s:
                return (f"time limit {fmt_duration(cfg.time_limit_s)} reached after {n_done} node(s) "
                        f"({fmt_duration(elapsed)} elapsed)", True)
        return None

    def _done(self, tree: T.Tree, reason: str, cut_short: bool) -> SearchDone:
        tree.stop_reason, tree.cut_short = reason, cut_short
        # the ensemble competes with the nodes; the one-standard-error rule then makes the pick
        ensemble_candidate(self.ctx, tree, self.name)
        pick = tree.pick()
        tree.save(self.ctx.run.tree_json)
        self._remember(tree, tree.best())
        return SearchDone(best_node=pick, n_nodes=len(tree.trained()),
                          reason=reason + (" (search cut short: best node so far)" if cut_short else ""),
                          ensemble=tree.ensemble_line())

    def _remember(self, tree: T.Tree, best: T.Node | None) -> None:
        """Store the finished search in the knowledge base (never data or targets). Its selected
        path is the best node's even where the ensemble is the pick: the KB's priors are over
        action paths, and an ensemble is none."""
        cfg = self.ctx.config
        if not cfg.use_kb or cfg.kb_replay is not None or not tree.trained():
            return
        profile = self._profile()
        rec = RunRecord(run_id=cfg.run_id, task_kind=cfg.task, profile=profile,
                        embedding=embed([profile])[0],
                        nodes=[NodeRecord(n.action, n.reward, n.val_metric, n.status) for n in tree.trained()],
                        selected_path=best.action if best else None,
                        selected_reward=best.reward if best else None,
                        start=(tree.kb or {}).get("mode", "tabula rasa"),
                        scope=scope_of_run(self.ctx.run.root))
        kb_id = KnowledgeBase(cfg.kb_path).add(rec)
        self.ctx.transcript.append("event", self.name, "knowledge_base_stored",
                                   {"kb_id": kb_id, "path": str(KnowledgeBase(cfg.kb_path).path),
                                    "nodes": len(rec.nodes), "selected_path": rec.selected_path})

    # ------------------------------------------------------------------ the next node

    def _llm_choice(self, tree: T.Tree) -> T.Choice | None:
        """The LLM's expansion (validated by the action grammar in ``agents.policies.planner``) as a
        ``Choice``: a root proposal ``paradigm/backbone`` adds the paradigm's decision node first
        when the tree has none yet. None without an LLM for the planner, or after its fallback."""
        menu = self._menu()

        def untried(n: T.Node) -> list[str]:
            if n.id == T.ROOT:
                tried = {k.action for k in tree.nodes.values() if T.level_of(k.action) == "backbone"}
                return [b for p in menu("") for b in menu(p) if b not in tried]
            return T.untried(tree, n, menu, same_model)

        exp = propose_expansion(self.ctx, tree, untried)
        if exp is None:
            return None
        why = f"LLM: {exp.rationale}"
        if exp.parent != T.ROOT:
            return T.Choice(exp.parent, [exp.action], [why], [why])
        paradigm = exp.action.split("/")[0]
        existing = next((k for k in tree.kids(tree.nodes[T.ROOT]) if k.action == paradigm), None)
        if existing is not None:
            return T.Choice(existing.id, [exp.action], [why], [why])
        return T.Choice(T.ROOT, [paradigm, exp.action], [why], [why, why])

    def _next(self, tree: T.Tree, busy: frozenset[str] = frozenset()) -> NodePlan | SearchDone | None:
        """The next node to train, or SearchDone when the search is over. ``busy``: the nodes in
        flight (parallel search); with some, None means no new node should start now."""
        resumed = next((n for n in tree.nodes.values()
                        if n.status == "planned" and n.id != T.ROOT and n.id not in busy), None)
        if resumed is not None:  # a resumed run: planned (in flight) when the last stop came
            return NodePlan(node_id=resumed.id, action=resumed.action, parent=resumed.parent,
                            reason=f"{resumed.plan_reason} {RESUMED_PLAN}".lstrip())
        stop = self._stop(tree, len(busy))
        if stop:
            return None if busy else self._done(tree, *stop)
        # a routing decision (SPEC 10) takes precedence; otherwise an LLM, when configured, proposes
        choice = None if tree.route else self._llm_choice(tree)
        if choice is None:
            choice = self._builtin_choice(tree)
        while choice is None and (reopened := reopen_best(tree)):  # spend the budget refining
            self._trace(reopened)
            choice = self._builtin_choice(tree)
        if choice is None:  # in flight nodes may still open new branches when they report
            return None if busy else self._done(tree, "action space exhausted", False)
        parent = choice.parent
        for action, why in zip(choice.actions[:-1], choice.chosen_by):
            parent = tree.add(parent, action, chosen_by=why, status="decision").id
        node = tree.add(parent, choice.actions[-1], chosen_by=choice.chosen_by[-1] if choice.chosen_by else "")
        node.plan_reason = choice.reason
        tree.save(self.ctx.run.tree_json)
        return NodePlan(node_id=node.id, action=node.action, parent=parent, reason=choice.reason)

    def _builtin_choice(self, tree: T.Tree) -> T.Choice | None:
        return self.policy(tree, self._profile() if self.ctx.config.use_kb else "", tree.priors, self._menu())

    def on_UnifyDone(self, done: UnifyDone | None) -> SearchDone:
        tree = self._tree()
        if tree.started_at is None:
            self._start(tree)
            tree.save(self.ctx.run.tree_json)
        return run_search(self)

    def on_Approval(self, a: Approval) -> SearchDone:
        if not a.approved:
            return SearchDone(best_node=None, n_nodes=0, reason=f"the user stopped the run: {a.note or 'declined'}")
        self._steer(a)
        return self.on_UnifyDone(None)

    def _steer(self, a: Approval) -> None:
        """The person's steering (already validated by the chat) into the run's configuration:
        task.yaml and the transcript, so `resume` and `replay --rerun` start from it."""
        cfg = self.ctx.config
        update: dict = {}
        if a.budget_nodes:
            update["budget_nodes"] = a.budget_nodes
        for change in a.changes:
            update["exclude"] = sorted(set(update.get("exclude", cfg.exclude)) | set(change.exclude))
            if change.time_limit_s:
                update["time_limit_s"] = change.time_limit_s
        changed = {k: [getattr(cfg, k), v] for k, v in update.items() if getattr(cfg, k) != v}
        if not changed:
            return
        # validated like the recorded configuration it becomes (a bad value fails here, not later)
        steered = type(cfg).model_validate({**cfg.model_dump(), **update})
        self.ctx.run.save_config(steered)
        self.ctx.config = steered
        self.ctx.transcript.append("event", self.name, "config_changed",
                                   {"by": "Approval", "note": a.note, "changed": changed})

    def apply(self, tree: T.Tree, outcome: NodeScored | NodeAbandoned) -> None:
        """A node's result into the tree (statistics, then failure routing); the caller saves."""
        node = record_outcome(tree, outcome)
        if isinstance(outcome, NodeAbandoned):
            self._trace(route_abandoned(tree, outcome.node_id, outcome.reason))
            return
        s = outcome
        # the cost yardstick is the first network trained: a closed-form fit takes seconds and
        # would make every network look too slow, and say hundreds of nodes fit in the time left
        network = not closed_form(node.action)
        if tree.t_root is None and network:
            tree.t_root = node.cpu_s if node.cpu_s is not None else node.wall_s
        T.backpropagate(tree, node.id, s.reward)
        if network and sum(not closed_form(n.action) for n in tree.trained()) == 1:
            self._measured_budget(tree, node)
        if "train_mean_val" in s.metrics:  # no validation split: nothing to compare, no routing
            self._trace(route_scored(tree, node.id, node.val_metric, s.metrics.get("train_mean_val"),
                                     self._menu(), same_model))

    def on_NodeScored(self, s: NodeScored) -> NodePlan | SearchDone:
        tree = self._tree()
        self.apply(tree, s)
        return self._next(tree)

    def on_NodeAbandoned(self, a: NodeAbandoned) -> NodePlan | SearchDone:
        tree = self._tree()
        self.apply(tree, a)
        return self._next(tree)
