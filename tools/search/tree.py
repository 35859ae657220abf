"""The Monte Carlo search tree as plain data (SPEC section 5), with pure scoring functions.

The tree is a dict of ``Node``s keyed by id and saved to ``tree.json`` after every change, so a
killed run resumes from it. Selection, reward and backpropagation are functions of that data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from harmonycell.tools.evaluation.metrics import HIGHER_IS_BETTER, SEARCH_METRIC, oriented
from harmonycell.tools.record import atomic

ALPHA_QMIX = 0.7
C_UCT = 1.0
EPS = 1e-6
W_PERF, W_TIME = 0.8, 0.2
ROOT = "root"

NodeStatus = Literal["planned", "ok", "failed"]


class Node(BaseModel):
    id: str
    parent: str | None
    action: str  # the full action path, e.g. "discriminative/resnet/hparams:lr=3e-4"
    status: NodeStatus = "planned"
    children: list[str] = Field(default_factory=list)
    visits: int = 0
    q_sum: float = 0.0
    q_max: float = 0.0
    reward: float | None = None
    val_metric: float | None = None  # validation SEARCH_METRIC (tools.evaluation.metrics)
    wall_s: float | None = None

    @property
    def q_mean(self) -> float:
        return self.q_sum / self.visits if self.visits else 0.0

    @property
    def q_mix(self) -> float:
        return ALPHA_QMIX * self.q_max + (1 - ALPHA_QMIX) * self.q_mean


class Tree(BaseModel):
    nodes: dict[str, Node] = Field(default_factory=lambda: {ROOT: Node(id=ROOT, parent=None, action="")})
    t_root: float | None = None  # run time of the first working node

    def add(self, parent: str, action: str) -> Node:
        node = Node(id=f"n{len(self.nodes):03d}", parent=parent, action=action)
        self.nodes[node.id] = node
        self.nodes[parent].children.append(node.id)
        return node

    def trained(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.id != ROOT and n.status != "planned"]

    def best(self) -> Node | None:
        """The working node with the best validation ``SEARCH_METRIC`` (its declared direction),
        ties broken by reward."""
        ok = [n for n in self.nodes.values() if n.status == "ok" and n.reward is not None]
        return max(ok, key=lambda n: (oriented(SEARCH_METRIC, n.val_metric) if n.val_metric is not None
                                      else -math.inf, n.reward), default=None)

    def save(self, path: Path) -> None:
        atomic.write_text(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> "Tree":
        return cls.model_validate_json(Path(path).read_text()) if Path(path).exists() else cls()


def uct(child: Node, parent_visits: int) -> float:
    return child.q_mix + C_UCT * math.sqrt(math.log(max(parent_visits, 1)) / (child.visits + EPS))


def f_time(t: float) -> float:
    """Efficiency term of the reward, ``t = T_exec / T_root``."""
    if t <= 0.8:
        return 1.0
    if t <= 1.0:
        return 1.0 - 0.2 * (t - 0.8) / 0.2
    if t <= 1.5:
        return 0.8 - 0.3 * (t - 1.0) / 0.5
    return max(0.0, 0.5 - 0.5 * (t - 1.5) / 1.5)


def reward(m_val: float | None, t_exec: float | None, t_root: float | None) -> float:
    """``R = w_p M_val + w_e f_time``; a failed node (no metric) scores 0."""
    if m_val is None or t_exec is None:
        return 0.0
    t = t_exec / t_root if t_root else 1.0
    return W_PERF * m_val + W_TIME * f_time(t)


def normalised_metric(value: float | None, metric: str = SEARCH_METRIC) -> float | None:
    """A validation metric mapped to [0, 1], better = larger whatever its direction: a
    correlation clipped to [0, 1]; a lower-is-better distance d >= 0 as 1 / (1 + d)."""
    if value is None:
        return None
    if not HIGHER_IS_BETTER[metric]:
        return 1.0 / (1.0 + max(0.0, value))
    return min(1.0, max(0.0, value))


def backpropagate(tree: Tree, node_id: str, r: float) -> None:
    cur: str | None = node_id
    while cur is not None:
        n = tree.nodes[cur]
        n.visits += 1
        n.q_sum += r
        n.q_max = max(n.q_max, r)
        cur = n.parent


def select(tree: Tree, expandable) -> str:
    """Descend from the root by UCT to the first node that ``expandable(node)`` still allows to
    grow; returns its id (the parent of the next expansion)."""
    cur = tree.nodes[ROOT]
    while True:
        if expandable(cur):
            return cur.id
        kids = [tree.nodes[c] for c in cur.children if tree.nodes[c].status == "ok"]
        if not kids:
            return cur.id
        cur = max(kids, key=lambda k: uct(k, cur.visits))
