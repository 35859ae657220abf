"""Planner: Monte Carlo tree search over the hierarchical action space (SPEC sections 4-5)."""

from __future__ import annotations

from harmonycell.agents.base import StepAgent
from harmonycell.agents.policies.planner import propose_expansion
from harmonycell.agents.messages import Approval, NodeAbandoned, NodePlan, NodeScored, SearchDone, UnifyDone
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.actions import child_actions, root_actions


class Planner(StepAgent):
    description_text = "Chooses which architecture / refinement to train next (MCTS)."

    def _tree(self) -> T.Tree:
        return T.Tree.load(self.ctx.run.tree_json)

    def _untried(self, tree: T.Tree, node: T.Node) -> list[str]:
        tried = {tree.nodes[c].action for c in node.children}
        options = root_actions() if node.id == T.ROOT else child_actions(node.action)
        banned = set(self.ctx.config.exclude)  # paradigms or backbones the person ruled out
        return [a for a in options if a not in tried and not banned & set(a.split("/")[:2])]

    def _next(self, tree: T.Tree) -> NodePlan | SearchDone:
        n_done = len(tree.trained())
        limit = self.ctx.config.time_limit_s
        spent = sum(n.wall_s or 0.0 for n in tree.nodes.values())
        if limit is not None and n_done and spent >= limit:
            best = tree.best()
            tree.save(self.ctx.run.tree_json)
            return SearchDone(best_node=best.id if best else None, n_nodes=n_done,
                              reason=f"time budget of {limit:g}s spent ({spent:.0f}s of training)")
        if n_done >= self.ctx.config.budget_nodes:
            best = tree.best()
            tree.save(self.ctx.run.tree_json)
            return SearchDone(best_node=best.id if best else None, n_nodes=n_done,
                              reason=f"budget of {self.ctx.config.budget_nodes} node(s) spent")
        parent_id = T.select(tree, lambda n: bool(self._untried(tree, n))
                             and (n.id == T.ROOT or n.status == "ok"))
        options = self._untried(tree, tree.nodes[parent_id])
        if not options:
            best = tree.best()
            tree.save(self.ctx.run.tree_json)
            return SearchDone(best_node=best.id if best else None, n_nodes=n_done,
                              reason="action space exhausted")
        llm = propose_expansion(self.ctx, tree, lambda n: self._untried(tree, n))
        if llm is not None:  # validated by the action grammar in agents.policies.planner
            node = tree.add(llm.parent, llm.action)
            tree.save(self.ctx.run.tree_json)
            return NodePlan(node_id=node.id, action=node.action, parent=llm.parent,
                            reason=f"LLM: {llm.rationale}")
        node = tree.add(parent_id, options[0])
        tree.save(self.ctx.run.tree_json)
        where = "root" if parent_id == T.ROOT else f"refining {tree.nodes[parent_id].action}"
        return NodePlan(node_id=node.id, action=node.action, parent=parent_id,
                        reason=f"UCT selected {where}")

    def on_UnifyDone(self, done: UnifyDone | None) -> NodePlan | SearchDone:
        tree = self._tree()
        pending = [n for n in tree.nodes.values() if n.id != T.ROOT and n.status == "planned"]
        if pending:  # a resumed run: a node was planned but never finished
            n = pending[0]
            return NodePlan(node_id=n.id, action=n.action, parent=n.parent,
                            reason="resumed: re-running a node interrupted by the last stop")
        return self._next(tree)

    def on_Approval(self, a: Approval) -> NodePlan | SearchDone:
        if not a.approved:
            return SearchDone(best_node=None, n_nodes=0, reason=f"the user stopped the run: {a.note or 'declined'}")
        if a.budget_nodes:
            self.ctx.config.budget_nodes = a.budget_nodes
        for change in a.changes:  # the person's steering, already validated by the chat
            self.ctx.config.exclude = sorted(set(self.ctx.config.exclude) | set(change.exclude))
            if change.time_limit_s:
                self.ctx.config.time_limit_s = change.time_limit_s
        return self.on_UnifyDone(None)

    def on_NodeScored(self, s: NodeScored) -> NodePlan | SearchDone:
        tree = self._tree()
        node = tree.nodes[s.node_id]
        node.status, node.reward = "ok", s.reward
        node.val_metric = s.metrics.get("DeltaPCC")
        node.wall_s = s.metrics.get("wall_s")
        if tree.t_root is None:
            tree.t_root = node.wall_s
        T.backpropagate(tree, node.id, s.reward)
        return self._next(tree)

    def on_NodeAbandoned(self, a: NodeAbandoned) -> NodePlan | SearchDone:
        tree = self._tree()
        tree.nodes[a.node_id].status, tree.nodes[a.node_id].reward = "failed", 0.0
        T.backpropagate(tree, a.node_id, 0.0)
        return self._next(tree)
