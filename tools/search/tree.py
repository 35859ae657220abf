"""The Monte Carlo search tree as plain data (SPEC sections 4, 5, 10), with pure functions on it.

Levels: root -> paradigm -> backbone -> refinements. A paradigm node is a decision, never trained
(status ``decision``); its statistics are those backpropagated from the backbones below it. The
tree is saved to ``tree.json`` after every change, so a killed run resumes from it.

Selection descends by UCT (``Q_mix``) at every level. A node may take a new child while it has
fewer than ``ceil(sqrt(N))`` live children (progressive widening: with a menu of ~15 refinements
per backbone, expanding every child before descending would spend a 16-node budget on one
backbone). Among untried children the expansion follows a prior: the knowledge base's when the
run was warm-started, else uniform with the run's seed. ``choose_expansion`` is the whole policy:
the tree as data, the priors and the seed in, a ``Choice`` (parent, new action(s), reason) out, so
another policy (an LLM's) can replace it.

The reward's cost term uses CPU seconds of the node's process tree (measured by the sandbox:
``ExecutionResult.cpu_s``), not wall time, so that the same node earns the same reward on an idle
and on a busy machine; wall time is kept for people.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, Field

from harmonycell.tools.search.actions import closed_form, residual_base
from harmonycell.tools.evaluation.metrics import HIGHER_IS_BETTER, SEARCH_METRIC, oriented
from harmonycell.tools.record import atomic
from harmonycell.tools.search.selection import Candidate, PickRule, complexity_of, ensemble_complexity, one_se_pick

ALPHA_QMIX = 0.7
C_UCT = 1.0
EPS = 1e-6
W_PERF, W_TIME = 0.8, 0.2
ROOT = "root"
HYPOTHESIS_PRIOR_FACTOR = 0.5  # a paradigm failing in 2+ backbones keeps half its exploration bonus
VIRTUAL_LOSS = 0.0  # the reward an in-flight node is assumed to earn until it reports (pessimistic)
ENSEMBLE_ID = "ensemble"  # the pick's name when the ensemble wins; also its folder beside the nodes'

NodeStatus = Literal["planned", "ok", "failed", "decision"]
Level = Literal["root", "paradigm", "backbone", "refinement"]


def level_of(action: str) -> Level:
    n = len([s for s in action.split("/") if s])
    return "root" if n == 0 else "paradigm" if n == 1 else "backbone" if n == 2 else "refinement"


class Node(BaseModel):
    id: str
    parent: str | None
    action: str  # the full action path, e.g. "discriminative/resnet/hparams:lr=0.003"
    status: NodeStatus = "planned"
    children: list[str] = Field(default_factory=list)
    visits: int = 0
    q_sum: float = 0.0
    q_max: float = 0.0
    reward: float | None = None
    val_metric: float | None = None  # validation SEARCH_METRIC (tools.evaluation.metrics)
    # what its execution said (AIDE's journal node): written when the node is scored or abandoned,
    # read by the Judge and the report instead of the transcript
    wall_s: float | None = None
    cpu_s: float | None = None
    backend: str | None = None  # the sandbox backend of its scored attempt
    attempts: int = 0  # sandbox runs, the Debugger's re-runs included
    predictions: dict[str, str] = Field(default_factory=dict)  # split -> sha256 the sandbox recorded
    metrics: dict[str, float | None] = Field(default_factory=dict)  # host-scored validation metrics
    error_tail: str | None = None  # why it was abandoned (the last error)
    prior: float = 1.0  # weight of the exploration term; lowered by a hypothesis failure
    blocked: str | None = None  # why nothing more is expanded below this node
    chosen_by: str = ""  # what picked this node when it was added (prior or routing rule)
    # the reason its NodePlan gave: a resumed run re-issues the plan of a node in flight at the stop
    # with it, so the record reads as one straight run's even where the stop came before the plan
    # reached the transcript
    plan_reason: str = ""

    @property
    def level(self) -> Level:
        return level_of(self.action)

    @property
    def q_mean(self) -> float:
        return self.q_sum / self.visits if self.visits else 0.0

    @property
    def q_mix(self) -> float:
        return ALPHA_QMIX * self.q_max + (1 - ALPHA_QMIX) * self.q_mean


class Ensemble(BaseModel):
    """The ensemble of the search's best nodes (``tools.search.ensemble``), a candidate for the
    pick: its members, their weights and its validation score, on the tree for the Judge and the
    report."""

    members: list[str]  # node ids, best first
    actions: list[str]
    weights: list[float]  # fitted on every validation query: they make the test prediction
    val_metric_name: str
    val_metric: float | None  # cross-fitted: each fold scored with weights fitted on the others
    val_aggregate: dict[str, float | None]
    folds: int
    fold_unit: str = "condition"  # what one fold holds: the task's held-out unit (condition or context)
    rule: str = ""
    predictions: dict[str, str] = Field(default_factory=dict)  # split -> sha256 of the file the host wrote

    def label(self) -> str:
        return (f"an ensemble of {', '.join(self.members)} "
                f"(weights {', '.join(f'{w:.2f}' for w in self.weights)})")


def _rank(value: float | None) -> float:
    """The validation headline as the search ranks it (larger is better; undefined is last)."""
    return oriented(SEARCH_METRIC, value) if value is not None else -math.inf


class Tree(BaseModel):
    nodes: dict[str, Node] = Field(default_factory=lambda: {ROOT: Node(id=ROOT, parent=None, action="", status="decision")})
    t_root: float | None = None  # cost (CPU s) of the first working network (closed-form fits aside)
    seed: int = 0
    started_at: float | None = None  # epoch seconds when the search began (time limit)
    kb: dict[str, Any] | None = None  # what the knowledge base said (warm start or tabula rasa)
    priors: dict[str, float] = Field(default_factory=dict)  # action prefix -> KB prior
    route: dict[str, str] | None = None  # a pending routing decision: {"parent", "reason"}
    stop_reason: str | None = None
    cut_short: bool = False
    ensemble: Ensemble | None = None  # built when the search ended (None: see ensemble_note)
    ensemble_note: str | None = None  # why no ensemble was built
    pick_rule: PickRule | None = None  # what the one-standard-error rule picked when the search ended

    def add(self, parent: str, action: str, chosen_by: str = "", status: NodeStatus = "planned") -> Node:
        node = Node(id=f"n{len(self.nodes):03d}", parent=parent, action=action, chosen_by=chosen_by,
                    status=status)
        self.nodes[node.id] = node
        self.nodes[parent].children.append(node.id)
        return node

    def trained(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.status in ("ok", "failed")]

    def best(self, where: Callable[[Node], bool] = lambda n: True) -> Node | None:
        """The working node (among those ``where`` allows) with the best validation
        ``SEARCH_METRIC`` (its declared direction), ties broken by reward."""
        ok = [n for n in self.nodes.values() if n.status == "ok" and n.reward is not None and where(n)]
        return max(ok, key=lambda n: (_rank(n.val_metric), n.reward), default=None)

    def validation_pick(self) -> str | None:
        """The best on validation: the ensemble where its cross-fitted validation headline is
        strictly better than the best node's (``best``'s order), else the best node."""
        best = self.best()
        ens = self.ensemble
        if ens is not None and ens.val_metric is not None and (
                best is None or _rank(ens.val_metric) > _rank(best.val_metric)):
            return ENSEMBLE_ID
        return best.id if best else None

    def pick(self) -> str | None:
        """What goes to the test: the one-standard-error rule's choice recorded when the search
        ended (``record_pick_rule``), else ``validation_pick``. A record whose best is no longer
        the validation ranking's (the tree changed since) is stale and not used."""
        best = self.validation_pick()
        rule = self.pick_rule
        if rule is not None and rule.best == best and (rule.picked in self.nodes or rule.picked == ENSEMBLE_ID):
            return rule.picked
        return best

    def pick_candidates(self) -> list[tuple[str, str, int]]:
        """(id, label, complexity rank) of every candidate for the pick: the working nodes with a
        validation score, and the ensemble where it has one, in the validation ranking's order."""
        ranked = [(_rank(n.val_metric), n.reward, n.id, n.action, complexity_of(n.action))
                  for n in self.nodes.values() if n.status == "ok" and n.reward is not None and n.val_metric is not None]
        ens = self.ensemble
        if ens is not None and ens.val_metric is not None:
            # below a node it ties with: the ensemble must be strictly better (``validation_pick``)
            ranked.append((_rank(ens.val_metric), -math.inf, ENSEMBLE_ID, ens.label(), ensemble_complexity(ens.actions)))
        ranked.sort(key=lambda t: (t[0], t[1]), reverse=True)
        return [(i, label, c) for _, _, i, label, c in ranked]

    def record_pick_rule(self, values: dict[str, list[float] | None], metric: str) -> PickRule | None:
        """Apply the one-standard-error rule (``tools.search.selection``) to the candidates, with
        ``values``: each one's per-query validation ``metric`` (the same queries for all; None or
        missing: undefined), and record what it did on the tree. None where nothing was picked."""
        best = self.validation_pick()
        if best is None:
            self.pick_rule = None
            return None
        cands = [Candidate(i, label, c, values.get(i)) for i, label, c in self.pick_candidates()]
        if best not in {c.id for c in cands}:  # the best node has no validation score
            self.pick_rule = None
            return None
        self.pick_rule = one_se_pick(cands, best, metric, HIGHER_IS_BETTER[metric])
        return self.pick_rule

    def picked_nodes(self, picked: str | None) -> list[Node]:
        """The trained nodes behind a pick: the ensemble's members, or the node itself."""
        if picked == ENSEMBLE_ID:
            return [self.nodes[m] for m in self.ensemble.members] if self.ensemble else []
        return [self.nodes[picked]] if picked in self.nodes else []

    def describe(self, picked: str | None) -> str | None:
        """The pick in words: its action path, or "an ensemble of n003, n005 (weights ...)"."""
        if picked == ENSEMBLE_ID:
            return self.ensemble.label() if self.ensemble else None
        node = self.nodes.get(picked or "")
        return node.action if node else None

    def ensemble_line(self) -> str:
        """One line on the ensemble: built (members, weights, cross-fitted score) or why not."""
        ens = self.ensemble
        if ens is None:
            return f"no ensemble: {self.ensemble_note or 'not built'}"
        best = self.best()
        val = f"{ens.val_metric:.4f}" if ens.val_metric is not None else "undefined"
        vs = (f"the best node {best.id} scored {best.val_metric:.4f}" if best and best.val_metric is not None
              else "no node scored")
        pick = self.pick()
        won = ("picked" if pick == ENSEMBLE_ID else
               "not picked (a simpler model is within one standard error)" if self.validation_pick() == ENSEMBLE_ID
               else "not picked (not strictly better)")
        return (f"{ens.label()}: cross-fitted validation {ens.val_metric_name} {val} over {ens.folds} "
                f"folds of {ens.fold_unit}s, {won}; {vs}")

    def best_simple(self) -> Node | None:
        """The best closed-form node: the one a network learns the residual on (``on:SIMPLE``)."""
        return self.best(lambda n: n.level in ("backbone", "refinement") and closed_form(n.action))

    def pick_sentence(self, picked: str | None) -> str:
        """What kind of model the pick is, beside the best of the other kind, on validation (the
        simple models are the yardstick every network must beat), the ensemble's part, and what
        the one-standard-error rule did."""
        val = lambda n: f"{n.val_metric:.4f}" if n.val_metric is not None else "undefined"
        if picked == ENSEMBLE_ID and self.ensemble is not None:
            ens, best = self.ensemble, self.best()
            parts = ", ".join(f"{m} (`{a}`, weight {w:.2f})" for m, a, w in zip(ens.members, ens.actions, ens.weights))
            kinds = ("simple (closed-form) models only" if all(closed_form(a) for a in ens.actions) else
                     "networks only" if not any(closed_form(a) for a in ens.actions) else "simple models and networks")
            text = (f"The pick is an ensemble ({kinds}) of {parts}: its cross-fitted validation {ens.val_metric_name} "
                    f"{ens.val_metric:.4f} is better than the best single node's, {best.id} `{best.action}` "
                    f"({val(best)}). The host combined the members' saved predictions; no code of its own ran.")
        else:
            node = self.nodes.get(picked or "")
            if node is None or node.status != "ok":
                return ""
            text = self._node_pick_sentence(node, val)
        rule = self.pick_rule_sentence(picked)
        return f"{text} {rule}" if rule else text

    def pick_rule_sentence(self, picked: str | None) -> str:
        """What the one-standard-error rule did for ``picked``, in words ("" where it has no record)."""
        r = self.pick_rule
        if r is None or picked is None or r.picked != picked or self.pick() != picked:
            return ""
        if not r.applied:
            return f"The one-standard-error rule did not apply: {r.why}."
        name = lambda i, label: label if i == ENSEMBLE_ID else f"{i} `{label}`"
        if r.picked != r.best:
            return (f"{name(r.picked, r.picked_label)} is within one standard error ({r.se:.3f}) of the best "
                    f"validation score ({name(r.best, r.best_label)}, {r.best_mean:.3f} vs {r.picked_mean:.3f}); "
                    f"the simpler model is the pick (one-standard-error rule, {r.metric} paired over "
                    f"{r.n_queries} validation queries).")
        return (f"No simpler model is within one standard error of it ({r.metric} paired over "
                f"{r.n_queries} validation queries).")

    def _node_pick_sentence(self, node: Node, val) -> str:
        if closed_form(node.action):
            net = self.best(lambda n: n.level != "paradigm" and not closed_form(n.action))
            other = (f"the best network, `{net.action}`, scored {val(net)}" if net
                     else "no network finished")
            if node.id != self.validation_pick():  # picked by the one-standard-error rule
                return f"The pick is a simple (closed-form) model, `{node.action}` (validation {val(node)}); {other}."
            return (f"The pick is a simple (closed-form) model, `{node.action}`: it is the best on "
                    f"validation ({val(node)}); {other}.")
        simple = self.best_simple()
        other = (f"the best simple model, `{simple.action}`, scored {val(simple)}" if simple
                 else "no simple model finished")
        return f"The pick is the network `{node.action}` (validation {val(node)}); {other}."

    def kids(self, node: Node) -> list[Node]:
        return [self.nodes[c] for c in node.children]

    def summary(self) -> str:
        """One line for the report: how the search went and why it stopped."""
        n = len(self.trained())
        paradigms = sorted({x.action for x in self.nodes.values() if x.level == "paradigm"})
        refined = sum(1 for x in self.trained() if x.level == "refinement")
        kb = (self.kb or {}).get("mode", "no knowledge base")
        parts = [f"{n} node(s) trained over {len(paradigms)} paradigm(s) ({', '.join(paradigms)}), "
                 f"{refined} refinement(s); start: {kb}"]
        if self.stop_reason:
            parts.append(f"stopped: {self.stop_reason}" + (" -- the search was CUT SHORT" if self.cut_short else ""))
        return "; ".join(parts)

    def save(self, path: Path) -> None:
        atomic.write_text(path, self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> "Tree":
        return cls.model_validate_json(Path(path).read_text()) if Path(path).exists() else cls()


# ----------------------------------------------------------------------------- scoring

def uct(child: Node, parent_visits: int, virtual: int = 0) -> float:
    """``Q_mix + C * prior * sqrt(ln N(s) / (N(s') + eps))``; prior is 1 unless routing lowered it.

    ``virtual``: nodes in flight below ``child`` (parallel workers), counted as visits that earned
    VIRTUAL_LOSS (WU-UCT), so the next worker is steered elsewhere until their results are in."""
    n = child.visits + virtual
    q_mean = (child.q_sum + VIRTUAL_LOSS * virtual) / n if n else 0.0
    q = ALPHA_QMIX * child.q_max + (1 - ALPHA_QMIX) * q_mean
    return q + C_UCT * child.prior * math.sqrt(math.log(max(parent_visits, 1)) / (n + EPS))


def in_flight(tree: Tree) -> dict[str, int]:
    """node id -> nodes planned (being trained) at or below it: the virtual visits of WU-UCT."""
    out: dict[str, int] = {}
    for n in tree.nodes.values():
        if n.status != "planned":
            continue
        cur: str | None = n.id
        while cur is not None:
            out[cur] = out.get(cur, 0) + 1
            cur = tree.nodes[cur].parent
    return out


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
    """``R = w_p M_val + w_e f_time(T_exec / T_root)`` with T in CPU seconds; a failed node scores 0."""
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
    """Descend from the root by UCT to the first node that ``expandable(node)`` allows to grow."""
    cur = tree.nodes[ROOT]
    while True:
        if expandable(cur):
            return cur.id
        kids = [k for k in tree.kids(cur) if k.status in ("ok", "decision")]
        if not kids:
            return cur.id
        cur = max(kids, key=lambda k: uct(k, cur.visits))


# ----------------------------------------------------------------------------- the policy

def widening_limit(node: Node, virtual: int = 0) -> int:
    return max(1, math.ceil(math.sqrt(node.visits + virtual)))


@dataclass
class Choice:
    """The policy's answer: add ``actions`` (a chain: a new paradigm then its backbone, or one
    node) under ``parent``; the last one is trained. ``steps`` say what decided each level."""

    parent: str
    actions: list[str]
    steps: list[str] = field(default_factory=list)
    chosen_by: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.steps)


def _rng(tree: Tree, node: Node) -> random.Random:
    # a function of the tree's state, not of a stream, so a resumed run draws the same
    return random.Random(f"{tree.seed}:{node.id}:{len(node.children)}")


def pick_by_prior(tree: Tree, node: Node, options: list[str], priors: dict[str, float]) -> tuple[str, str]:
    # the simple models win many published comparisons and cost seconds: they are fitted first,
    # warm start or not, so every network is measured against them
    cheap = [o for o in options if closed_form(o)]  # in the action space's order
    if cheap:
        pick = cheap[0]
        return pick, f"builtin prior: closed-form models first, {pick} among {len(options)} untried"
    # a network's residual on the best simple model so far: it only has to learn what that misses
    simple = tree.best_simple()
    if simple is not None:
        name = simple.action.split("/")[1]
        on = [o for o in options if residual_base(o) == name]
        if on:
            return on[0], (f"builtin prior: residual on the best simple model ({simple.action}, "
                           f"validation {SEARCH_METRIC} {simple.val_metric}), {on[0]} among {len(options)} untried")
    scored = [(priors.get(o, 0.0), o) for o in options]
    best = max(s for s, _ in scored)
    if best > 0:
        top = [o for s, o in scored if s == best]
        pick = _rng(tree, node).choice(sorted(top))
        return pick, f"knowledge-base prior {best:.3f} (warm start) chose {pick} among {len(options)} untried"
    pick = _rng(tree, node).choice(sorted(options))
    return pick, f"uniform prior (seed {tree.seed}) chose {pick} among {len(options)} untried"


def choose_expansion(tree: Tree, menu: Callable[[str], list[str]], priors: dict[str, float] | None = None,
                     same: Callable[[str, str], bool] | None = None) -> Choice | None:
    """One expansion of hierarchical MCTS; None when nothing is left to try.

    ``menu(action)`` lists a node's children (``""`` is the root); ``same(a, b)`` says two paths
    train the same model (so a reordered refinement is not trained twice)."""
    priors = tree.priors if priors is None else priors
    if tree.route:  # a routing decision (SPEC 10) takes precedence over selection
        parent = tree.nodes[tree.route["parent"]]
        options = untried(tree, parent, menu, same)
        reason = tree.route["reason"]
        tree.route = None
        if options:
            action, why = pick_by_prior(tree, parent, options, priors)
            return Choice(parent.id, [action], [f"routing: {reason}", why], [f"routing; {why}"])
    steps: list[str] = []
    vl = in_flight(tree)
    cur = tree.nodes[ROOT]
    while True:
        options = [] if cur.blocked else untried(tree, cur, menu, same)
        live_kids = [k for k in tree.kids(cur) if k.status in ("ok", "decision") and live(tree, k, menu, same)]
        open_kids = [k for k in tree.kids(cur) if k.status != "failed"]
        if options and (len(open_kids) < widening_limit(cur, vl.get(cur.id, 0)) or not live_kids):
            action, why = pick_by_prior(tree, cur, options, priors)
            steps.append(why)
            chain, chosen = [action], [why]
            if level_of(action) == "paradigm":  # a paradigm is a decision: pick its backbone too
                backbone, why2 = pick_by_prior(tree, Node(id=f"{cur.id}>{action}", parent=None, action=action),
                                               menu(action), priors)
                steps.append(why2)
                chain.append(backbone)
                chosen.append(why2)
            return Choice(cur.id, chain, steps, chosen)
        if not live_kids:
            return None
        if len(live_kids) == 1:
            nxt = live_kids[0]
            steps.append(f"{nxt.action} is the only live child of {cur.action or 'the root'}")
        else:
            scores = {k.id: uct(k, cur.visits + vl.get(cur.id, 0), vl.get(k.id, 0)) for k in live_kids}
            nxt = max(live_kids, key=lambda k: scores[k.id])
            runner = max((k for k in live_kids if k.id != nxt.id), key=lambda k: scores[k.id])
            busy = sum(vl.get(k.id, 0) for k in live_kids)
            steps.append(f"UCT chose {nxt.action} ({scores[nxt.id]:.3f} vs {runner.action} "
                         f"{scores[runner.id]:.3f}) at the {cur.level} level"
                         + (f" (virtual loss for {busy} node(s) in flight)" if busy else ""))
        cur = nxt


def untried(tree: Tree, node: Node, menu, same=None) -> list[str]:
    existing = [k.action for k in tree.kids(node)]
    out = []
    for a in menu(node.action):
        if a in existing:
            continue
        if same is not None and any(same(a, n.action) for n in tree.nodes.values() if n.id != ROOT):
            continue
        out.append(a)
    return out


def live(tree: Tree, node: Node, menu, same=None) -> bool:
    """Whether anything can still be expanded at or below ``node``."""
    if node.status not in ("ok", "decision"):
        return False
    if not node.blocked and untried(tree, node, menu, same):
        return True
    return any(live(tree, k, menu, same) for k in tree.kids(node))
