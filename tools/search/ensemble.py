"""An ensemble of the search's best nodes, weighted on validation only: a candidate like a node.

The members are the ``ENSEMBLE_TOP`` working nodes with the best validation headline. Their
predictions are averaged with convex weights (non-negative, summing to one) that minimise the
squared error of the validation predictions. Test predictions are never read to choose anything.

Weights fitted on the validation queries would flatter the ensemble on those same queries, so its
validation score, the one that competes with the nodes' for the pick, is *cross-fitted*: the
validation conditions are split into ``ENSEMBLE_FOLDS`` seeded folds, each fold predicted with
weights fitted on the others, and the assembled out-of-fold prediction is scored. The final
weights (fitted on every validation query) make the ensemble's test prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel
from scipy.optimize import minimize

from harmonycell.tools.errors import InputError
from harmonycell.tools.evaluation.metrics import headline_of, score
from harmonycell.tools.evaluation.pseudobulk import Targets
from harmonycell.tools.record import atomic
from harmonycell.tools.search.tree import Tree

ENSEMBLE_TOP = 3
ENSEMBLE_FOLDS = 5
RULE = (f"convex weights (>= 0, sum 1) minimising the squared error of the validation predictions of "
        f"the top {ENSEMBLE_TOP} nodes; its validation score is cross-fitted over up to "
        f"{ENSEMBLE_FOLDS} folds of validation conditions (weights never fitted on the queries they score)")


class Ensemble(BaseModel):
    members: list[str]  # node ids, best first
    actions: list[str]
    weights: list[float]  # fitted on every validation query: they make the test prediction
    val_metric_name: str
    val_metric: float | None  # cross-fitted (module docstring)
    val_aggregate: dict[str, float | None]
    folds: int
    rule: str = RULE


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


def condition_folds(conditions: list[str], n_folds: int, seed: int) -> np.ndarray:
    """A fold id per query; the queries of one condition (several contexts) share a fold."""
    names = sorted(set(conditions))
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[i]: j % n_folds for j, i in enumerate(order)}
    return np.array([fold_of[c] for c in conditions])


def cross_fitted(preds: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each fold's queries predicted with weights fitted on the other folds' queries."""
    out = np.empty_like(y)
    for f in np.unique(folds):
        rest = folds != f
        w = simplex_weights(preds[:, rest], y[rest])
        out[~rest] = np.tensordot(w, preds[:, ~rest], axes=1)
    return out


def build_ensemble(members: list[tuple[str, str, np.ndarray, np.ndarray]], val: Targets, seed: int = 0
                   ) -> tuple[Ensemble | None, np.ndarray | None, np.ndarray | None, str]:
    """``members``: (node id, action, validation prediction (Q_val, G), test prediction) per
    node, best first. Returns (ensemble, its cross-fitted validation prediction, its test
    prediction, "") or (None, None, None, why there is no ensemble)."""
    if len(members) < 2:
        return None, None, None, f"{len(members)} working node(s): an ensemble needs two"
    conditions = [q.condition for q in val.queries]
    n_folds = min(ENSEMBLE_FOLDS, len(set(conditions)))
    if n_folds < 2:
        return None, None, None, "fewer than two validation conditions: no cross-fitted score"
    P = np.stack([np.asarray(m[2], dtype=np.float64) for m in members])
    y = np.asarray(val.y, dtype=np.float64)
    oof = cross_fitted(P, y, condition_folds(conditions, n_folds, seed))
    w = simplex_weights(P, y)
    test = np.tensordot(w, np.stack([np.asarray(m[3], dtype=np.float64) for m in members]), axes=1)
    agg = score(val, oof).aggregate
    name, value = headline_of(agg)
    ens = Ensemble(members=[m[0] for m in members], actions=[m[1] for m in members],
                   weights=[round(float(x), 6) for x in w], val_metric_name=name, val_metric=value,
                   val_aggregate=agg, folds=n_folds)
    return ens, oof.astype(np.float32), test.astype(np.float32), ""


ENSEMBLE_DIR = "ensemble"  # beside the nodes' folders: pred_val.npy (cross-fitted), pred_test.npy, ensemble.json
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


def ensemble_of_tree(tree: Tree, nodes_dir: Path, val: Targets, seed: int = 0) -> tuple[Ensemble | None, str]:
    """The ensemble of the tree's top nodes from their saved predictions (each file checked
    against the sha256 the sandbox recorded), written to ``nodes_dir/ensemble/``."""
    members = []
    for n in top_nodes(tree):
        preds = {}
        for split, name in PRED.items():
            path = Path(nodes_dir) / n.id / name
            want = n.predictions.get(split)
            if not path.is_file() or (want and atomic.sha256_file(path) != want):
                raise InputError(f"node {n.id}'s {name} is missing or is not the file the sandbox wrote",
                                 where=str(path), fix="re-run the node (`harmonycell resume`)")
            preds[split] = np.load(path)
        members.append((n.id, n.action, preds["val"], preds["test"]))
    ens, oof, test, why = build_ensemble(members, val, seed)
    if ens is None:
        return None, why
    out = Path(nodes_dir) / ENSEMBLE_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in ((PRED["val"], oof), (PRED["test"], test)):
        atomic.write_with(out / name, lambda p, a=arr: _save_npy(p, a))
    atomic.write_text(out / "ensemble.json", ens.model_dump_json(indent=2) + "\n")
    return ens, ""


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append .npy to a bare temp name
        np.save(fh, arr)
