"""An ensemble of the search's best nodes, weighted on validation only: a candidate like a node.

The members are the ``ENSEMBLE_TOP`` working nodes with the best validation headline. Their
predictions are averaged with convex weights (non-negative, summing to one) that minimise the
squared error of the validation predictions. Test predictions are never read to choose anything.

Weights fitted on the validation queries would flatter the ensemble on those same queries, so its
validation score, the one that competes with the nodes' for the pick, is *cross-fitted*: the
validation units (conditions, or contexts where the task holds out contexts) are split into
``ENSEMBLE_FOLDS`` seeded folds, each fold predicted with
weights fitted on the others, and the assembled out-of-fold prediction is scored. The final
weights (fitted on every validation query) make the ensemble's test prediction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from scipy.optimize import minimize

from harmonycell.tools.errors import InputError
from harmonycell.tools.evaluation.metrics import headline_of, score
from harmonycell.tools.evaluation.pseudobulk import Targets
from harmonycell.tools.record import atomic
from harmonycell.tools.search.tree import ENSEMBLE_ID, Ensemble, Tree

ENSEMBLE_TOP = 3
ENSEMBLE_FOLDS = 5
RULE = (f"convex weights (>= 0, sum 1) minimising the squared error of the validation predictions of "
        f"the top {ENSEMBLE_TOP} nodes; its validation score is cross-fitted over up to "
        f"{ENSEMBLE_FOLDS} folds of the validation units (weights never fitted on the queries they score)")


def simplex_weights(preds: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin_w ||sum_k w_k preds[k] - y||^2 with w >= 0, sum w = 1. ``preds``: (K, Q, G)."""
    k = len(preds)
    A = preds.reshape(k, -1)
    b = y.reshape(-1)
    H, f = A @ A.T, A @ b  # the objective is the quadratic w'Hw - 2 f'w (+ const)
    res = minimize(lambda w: w @ H @ w - 2 * f @ w, np.full(k, 1.0 / k), jac=lambda w: 2 * (H @ w - f),
                   bounds=[(0.0, 1.0)] * k, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
                   method="SLSQP")
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def combine(weights, preds) -> np.ndarray:
    """The ensemble's prediction: the members' predictions weighted (float64 sums, float32 out,
    like the members' files). The one definition, used to build the ensemble and to verify it."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in preds])
    return np.tensordot(np.asarray(weights, dtype=np.float64), stacked, axes=1).astype(np.float32)


def condition_folds(units: list[str], n_folds: int, seed: int) -> np.ndarray:
    """A fold id per query, from each query's held-out unit: the queries of one unit share a fold
    (one condition in several contexts; or one context, where the task holds out contexts)."""
    names = sorted(set(units))
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[i]: j % n_folds for j, i in enumerate(order)}
    return np.array([fold_of[c] for c in units])


def cross_fitted(preds: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each fold's queries predicted with weights fitted on the other folds' queries."""
    out = np.empty_like(y)
    for f in np.unique(folds):
        rest = folds != f
        w = simplex_weights(preds[:, rest], y[rest])
        out[~rest] = np.tensordot(w, preds[:, ~rest], axes=1)
    return out


def build_ensemble(members: list[tuple[str, str, np.ndarray, np.ndarray]], val: Targets, seed: int = 0,
                   unit: str = "condition") -> tuple[Ensemble | None, np.ndarray | None, np.ndarray | None, str]:
    """``members``: (node id, action, validation prediction (Q_val, G), test prediction) per
    node, best first; ``unit``: the task's held-out unit, ``condition`` or ``context`` (the
    folds keep one unit's queries together). Returns (ensemble, its cross-fitted validation
    prediction, its test prediction, "") or (None, None, None, why there is no ensemble)."""
    if len(members) < 2:
        return None, None, None, too_few(len(members))
    units = [getattr(q, unit) for q in val.queries]
    n_folds = min(ENSEMBLE_FOLDS, len(set(units)))
    if n_folds < 2:
        return None, None, None, f"fewer than two validation {unit}s: no cross-fitted score"
    P = np.stack([np.asarray(m[2], dtype=np.float64) for m in members])
    y = np.asarray(val.y, dtype=np.float64)
    oof = cross_fitted(P, y, condition_folds(units, n_folds, seed))
    # rounded as recorded, and the test prediction made from the recorded weights, so that the
    # Judge recomputes it exactly from the record
    w = [round(float(x), 6) for x in simplex_weights(P, y)]
    test = combine(w, [m[3] for m in members])
    agg = score(val, oof).aggregate
    name, value = headline_of(agg)
    ens = Ensemble(members=[m[0] for m in members], actions=[m[1] for m in members], weights=w,
                   val_metric_name=name, val_metric=value, val_aggregate=agg, folds=n_folds, fold_unit=unit,
                   rule=RULE)
    return ens, oof.astype(np.float32), test, ""


def too_few(n: int) -> str:
    return f"{n} working node(s) with a validation score: an ensemble needs two"


ENSEMBLE_DIR = ENSEMBLE_ID  # beside the nodes' folders: pred_val.npy (cross-fitted), pred_test.npy, ensemble.json
PRED = {"val": "pred_val.npy", "test": "pred_test.npy"}


def top_nodes(tree: Tree, k: int = ENSEMBLE_TOP) -> list:
    """The ``k`` working nodes with the best validation headline (``Tree.best``'s order), best first."""
    out: list = []
    for _ in range(k):
        taken = {x.id for x in out}
        nxt = tree.best(lambda n: n.val_metric is not None and n.id not in taken)
        if nxt is None:
            break
        out.append(nxt)
    return out


def member_prediction(node, nodes_dir: Path, split: str) -> np.ndarray:
    """A node's saved prediction, refused unless it is the file whose sha256 the sandbox recorded."""
    path = Path(nodes_dir) / node.id / PRED[split]
    want = node.predictions.get(split)
    if not path.is_file() or not want or atomic.sha256_file(path) != want:
        raise InputError(f"node {node.id}'s {PRED[split]} is missing or is not the file the sandbox wrote",
                         where=str(path), fix="re-run the node (`harmonycell resume`)")
    return np.load(path)


def ensemble_of_tree(tree: Tree, nodes_dir: Path, val: Targets | Callable[[], Targets], seed: int = 0,
                     unit: str = "condition") -> tuple[Ensemble | None, str]:
    """The ensemble of the tree's top nodes from their saved predictions (each file checked
    against the sha256 the sandbox recorded), written to ``nodes_dir/ensemble/`` with the sha256s
    of what it wrote. ``val``: the validation targets, or what makes them (read only when there
    are two members: a run without a validation split has none)."""
    top = top_nodes(tree)
    if len(top) < 2:
        return None, too_few(len(top))
    members = [(n.id, n.action, member_prediction(n, nodes_dir, "val"), member_prediction(n, nodes_dir, "test"))
               for n in top]
    ens, oof, test, why = build_ensemble(members, val() if callable(val) else val, seed, unit)
    if ens is None:
        return None, why
    out = Path(nodes_dir) / ENSEMBLE_DIR
    out.mkdir(parents=True, exist_ok=True)
    for split, arr in (("val", oof), ("test", test)):
        atomic.write_with(out / PRED[split], lambda p, a=arr: _save_npy(p, a))
        ens.predictions[split] = atomic.sha256_file(out / PRED[split])
    atomic.write_text(out / "ensemble.json", ens.model_dump_json(indent=2) + "\n")
    return ens, ""


def verify_ensemble(tree: Tree, nodes_dir: Path, scored: Path) -> list[str]:
    """What is wrong with ``scored`` as the tree's ensemble's test prediction (empty: nothing):
    each member's test prediction must be the file the sandbox wrote, and ``scored`` must be
    their weighting by the recorded weights, recomputed here."""
    ens = tree.ensemble
    if ens is None:
        return ["the tree records no ensemble"]
    problems, preds = [], []
    for m in ens.members:
        try:
            preds.append(member_prediction(tree.nodes[m], nodes_dir, "test"))
        except InputError as exc:
            problems.append(exc.what)
    if problems:
        return problems
    if not Path(scored).is_file():
        return [f"{scored} is missing"]
    again, got = combine(ens.weights, preds), np.load(scored)
    if again.shape != got.shape or not np.array_equal(again, got):
        problems.append("the scored test predictions are not the recorded weighting of the members' predictions")
    return problems


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append .npy to a bare temp name
        np.save(fh, arr)
