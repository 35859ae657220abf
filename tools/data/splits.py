"""Seeded train/val/test splits for the three task kinds (SPEC sections 1 and 7).

The unit held out is what the task promises to be new at test time:
- ``unseen-perturbation``: single perturbations (genes for CRISPR data). A held-out unit is in
  no training or validation condition, alone or inside a combination: a condition goes to test
  if any of its units is a test unit, else to validation if any is a validation unit;
- ``unseen-combination``: pairs ``A+B`` whose singles both stay in training;
- ``unseen-cell-context``: whole contexts (a cell type within a dataset).
Control cells carry no condition, so they are shuffled within each context and cut in the same
ratios as the units; they are inputs for every split, never targets.

``fold=(k, K)`` replaces the single 80:20 cut by fold k of a seeded K-fold partition of the
units (nested cross-validation: validation is still carved from the fold's training units).
The rules that made a split are written into ``split_info["rule"]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from harmonycell.tools.errors import InputError
from harmonycell.tools.schema import COMBO_SEP, CONTROL_LABEL, SPLIT, TaskKind, context_labels, split_condition

TEST_FRACTION = 0.2
VAL_FRACTION = 0.15  # of the training units


def carve(units: list[str], frac: float, rng: np.random.Generator, keep_one: bool = True) -> tuple[list[str], list[str]]:
    """Split sorted ``units`` into (rest, held) with ``held`` about ``frac`` of them."""
    units = sorted(units)
    if len(units) < 2:
        return units, []
    n = int(round(frac * len(units)))
    n = max(1, n) if keep_one else n
    n = min(n, len(units) - 1)
    order = rng.permutation(len(units))
    held = sorted(units[i] for i in order[:n])
    rest = sorted(units[i] for i in order[n:])
    return rest, held


def split_controls(obs: pd.DataFrame, split: np.ndarray, ratios: dict[str, float], rng: np.random.Generator,
                   rows: np.ndarray | None = None) -> None:
    """Shuffle control cells within each context and cut them in ``ratios`` (in place)."""
    is_ctrl = obs["is_control"].to_numpy(bool)
    ctx = context_labels(obs).to_numpy()
    sel = is_ctrl if rows is None else (is_ctrl & rows)
    total = sum(ratios.values()) or 1.0
    names = [k for k in ("train", "val", "test") if ratios.get(k, 0) > 0]
    for c in sorted(set(ctx[sel])):
        idx = np.flatnonzero(sel & (ctx == c))
        idx = idx[rng.permutation(len(idx))]
        cuts, acc = [], 0.0
        for k in names[:-1]:
            acc += ratios[k] / total
            cuts.append(int(round(acc * len(idx))))
        for k, part in zip(names, np.split(idx, cuts)):
            split[part] = k


def assign_conditions(obs: pd.DataFrame, train: list[str], val: list[str], test: list[str]) -> np.ndarray:
    cond = obs["condition_name"].astype(str)
    split = np.full(len(obs), "train", dtype=object)
    split[cond.isin(val).to_numpy()] = "val"
    split[cond.isin(test).to_numpy()] = "test"
    return split


def perturbed_conditions(obs: pd.DataFrame) -> list[str]:
    return sorted(set(obs.loc[~obs["is_control"].astype(bool), "condition_name"].astype(str)) - {CONTROL_LABEL})


def cut_test(units: list[str], rng: np.random.Generator, fold: tuple[int, int] | None, what: str
             ) -> tuple[list[str], list[str]]:
    """(rest, test): about TEST_FRACTION of ``units`` held out, or fold k of a seeded K-fold
    partition (the same partition for every k of one seed, so each unit is tested once)."""
    units = sorted(units)
    if fold is None:
        return carve(units, TEST_FRACTION, rng)
    k, n_folds = fold
    if n_folds < 2 or not 0 <= k < n_folds:
        raise InputError(f"fold {k} of {n_folds} does not exist", where="--folds",
                         fix="use --folds K with K >= 2")
    if len(units) < n_folds:
        raise InputError(f"{n_folds} folds need at least {n_folds} held-out {what}, found {len(units)}",
                         where="--folds", fix=f"use --folds {max(2, len(units))} or fewer, or a single split")
    order = rng.permutation(len(units))
    test = sorted(units[i] for i in order[k::n_folds])
    return sorted(set(units) - set(test)), test


def unseen_perturbation(obs: pd.DataFrame, rng: np.random.Generator, fold=None) -> tuple[np.ndarray, dict]:
    conds = perturbed_conditions(obs)
    parts = {c: set(split_condition(c)) for c in conds}
    units = sorted(set().union(*parts.values())) if parts else []
    if len(units) < 3:
        raise InputError(f"unseen-perturbation needs at least 3 perturbations (distinct genes or agents), found {len(units)}",
                         where="--task unseen-perturbation", fix="use more perturbations or another task kind")
    rest, test_u = cut_test(units, rng, fold, "perturbations")
    train_u, val_u = carve(rest, VAL_FRACTION, rng)
    # a held-out unit is in no training or validation condition, alone or inside a combination
    test = sorted(c for c in conds if parts[c] & set(test_u))
    val = sorted(c for c in conds if c not in set(test) and parts[c] & set(val_u))
    train = sorted(set(conds) - set(test) - set(val))
    if not train:
        raise InputError("every perturbed condition contains a held-out perturbation: nothing is left to train on",
                         where="--task unseen-perturbation", fix="use more single perturbations or fewer folds")
    split = assign_conditions(obs, train, val, test)
    split_controls(obs, split, {"train": len(train), "val": len(val), "test": len(test)}, rng)
    return split, {"held_out_unit": "perturbation",
                   "rule": "single perturbations (genes) are the units: a test unit appears in no "
                           "training or validation condition, alone or in a combination; a condition "
                           "is test if any of its units is a test unit, else validation if any is a "
                           "validation unit, else training",
                   "train_units": train_u, "val_units": val_u, "test_units": test_u,
                   "train_conditions": train, "val_conditions": val, "test_conditions": test}


def _unit_key(name: str) -> str:
    """'B cells', 'b cell' and 'B' name the same cell type."""
    key = " ".join(str(name).lower().replace("_", " ").split())
    for tail in (" cells", " cell", "s"):
        if key.endswith(tail) and len(key) > len(tail):
            key = key[: -len(tail)]
            break
    return key


def match_contexts(names: list[str], contexts: list[str]) -> list[str]:
    """Contexts (``dataset|cell type``) that the person's ``names`` pick, by cell type or label."""
    picked = []
    for name in names:
        key = _unit_key(name)
        hits = [c for c in contexts if key in {_unit_key(c), _unit_key(c.split("|", 1)[-1])}]
        if not hits:
            types = sorted({c.split("|", 1)[-1] for c in contexts})
            raise InputError(f"no cell type or context named {name!r} in the data", where="hold out",
                             fix=f"name one of: {', '.join(types)}")
        picked += [c for c in hits if c not in picked]
    return picked


def unseen_cell_context(obs: pd.DataFrame, rng: np.random.Generator, fold=None,
                        hold_out: list[str] | None = None) -> tuple[np.ndarray, dict]:
    ctx = context_labels(obs)
    pert = ~obs["is_control"].astype(bool)
    by_ctx = {c: set(obs.loc[pert & (ctx == c), "condition_name"].astype(str)) for c in sorted(ctx.unique())}
    if len(by_ctx) < 2:
        raise InputError(f"unseen-cell-context needs at least 2 contexts (dataset, cell type), found {len(by_ctx)}",
                         where="--task unseen-cell-context", fix="add a dataset or cell type, or use another task kind")
    if hold_out:
        if fold is not None:
            raise InputError("a named held-out cell type and --folds cannot be combined", where="hold out",
                             fix="drop the hold-out or --folds")
        # the person named the context(s) the test must hold out
        shared = [c for c, s in by_ctx.items() if s & set().union(*(t for d, t in by_ctx.items() if d != c))]
        pool = shared or sorted(by_ctx)
        test_ctxs = match_contexts(hold_out, sorted(by_ctx))
        if len(test_ctxs) == len(by_ctx):
            raise InputError("holding out every cell context leaves nothing to train on", where="hold out",
                             fix="name fewer cell types")
    elif fold is None:
        # hold out a context whose perturbations are also seen elsewhere, so the test asks about
        # known perturbations in an unknown context
        shared = [c for c, s in by_ctx.items() if s & set().union(*(t for d, t in by_ctx.items() if d != c))]
        pool = shared or sorted(by_ctx)
        test_ctxs = [pool[int(rng.integers(len(pool)))]]
    else:
        pool = sorted(by_ctx)
        _, test_ctxs = cut_test(pool, rng, fold, "cell contexts")
    in_test = ctx.isin(test_ctxs).to_numpy()
    train_conds = sorted(set().union(*(s for c, s in by_ctx.items() if c not in test_ctxs)))
    others = [c for c in pool if c not in test_ctxs] if len(by_ctx) - len(test_ctxs) >= 2 else []
    info = {"held_out_unit": "cell context", "test_contexts": sorted(test_ctxs),
            "test_context": test_ctxs[0]}
    if others:
        # validation asks the task's own question: another whole context held out from training
        val_ctx = others[int(rng.integers(len(others)))]
        split = np.full(len(obs), "train", dtype=object)
        split[(ctx == val_ctx).to_numpy()] = "val"
        split[in_test] = "test"
        trained = set().union(*(s for c, s in by_ctx.items() if c not in test_ctxs and c != val_ctx))
        info.update(val_context=val_ctx, train_conditions=sorted(trained),
                    rule="whole contexts (dataset | cell type) are the units: every cell of a test "
                         "context is test; validation is another whole context")
    else:
        rest, val = carve(train_conds, VAL_FRACTION, rng)
        split = np.full(len(obs), "train", dtype=object)
        split[(~in_test) & obs["condition_name"].astype(str).isin(val).to_numpy()] = "val"
        split_controls(obs, split, {"train": len(rest), "val": len(val)}, rng, rows=~in_test)
        split[in_test] = "test"
        trained = set(rest)
        info.update(val_conditions=val, train_conditions=rest,
                    rule="whole contexts (dataset | cell type) are the units: every cell of a test "
                         "context is test; with one training context left, validation holds out "
                         "perturbations of the training context")
    test_conds = set().union(*(by_ctx[c] for c in test_ctxs))
    # perturbations of the test context that no training cell carries (in no training context,
    # or carved out for validation): the test asks two new things there, and says so
    info["test_conditions_never_trained"] = sorted(test_conds - trained)
    return split, info


def unseen_combination(obs: pd.DataFrame, rng: np.random.Generator, fold=None) -> tuple[np.ndarray, dict]:
    conds = perturbed_conditions(obs)
    singles = {c for c in conds if COMBO_SEP not in c}
    combos = [c for c in conds if COMBO_SEP in c]
    eligible = sorted(c for c in combos if all(p in singles for p in split_condition(c)))
    if not eligible:
        raise InputError(f"unseen-combination needs a combination A+B whose singles A and B are also measured; "
                         f"found {len(combos)} combinations, none with both singles",
                         where="--task unseen-combination", fix="use unseen-perturbation for this dataset")
    if len(eligible) == 1 and fold is None:
        rest, test = [], eligible
    else:
        rest, test = cut_test(eligible, rng, fold, "combinations")
    others = sorted(set(combos) - set(eligible))
    if rest:
        rest, val = carve(rest, VAL_FRACTION, rng) if len(rest) > 1 else ([], rest)
    else:
        others, val = carve(others, VAL_FRACTION, rng) if others else ([], [])
    train = sorted(singles) + sorted(set(rest) | set(others))
    split = assign_conditions(obs, train, val, test)
    split_controls(obs, split, {"train": len(train), "val": len(val), "test": len(test)}, rng)
    return split, {"held_out_unit": "combination",
                   "rule": "combinations A+B whose singles are both measured are the units: a test "
                           "pair is in no training condition while its singles are all training",
                   "train_conditions": train, "val_conditions": val, "test_conditions": test}


KINDS = {
    TaskKind.unseen_perturbation: unseen_perturbation,
    TaskKind.unseen_cell_context: unseen_cell_context,
    TaskKind.unseen_combination: unseen_combination,
}


def assign_splits(adata: AnnData, task: TaskKind | str, seed: int = 0,
                  fold: tuple[int, int] | None = None, hold_out: list[str] | None = None) -> AnnData:
    """Set ``obs['split']`` (train/val/test) and ``uns['split_info']``; returns ``adata``.
    ``fold=(k, K)``: the test units are fold k of a seeded K-fold partition.
    ``hold_out`` names the cell types (or ``dataset|cell type`` contexts) the test must hold out."""
    task = TaskKind.parse(task) if isinstance(task, str) else task
    rng = np.random.default_rng(seed)
    if hold_out and task != TaskKind.unseen_cell_context:
        raise InputError(f"holding out cell types needs the unseen-cell-context task, not {task.value}",
                         where="hold out", fix="use --task unseen-cell-context or drop the hold-out")
    split, info = (KINDS[task](adata.obs, rng, fold, hold_out) if hold_out else KINDS[task](adata.obs, rng, fold))
    adata.obs[SPLIT] = pd.Categorical(split, categories=["train", "val", "test"])
    counts = adata.obs[SPLIT].value_counts()
    adata.uns["split_info"] = {"task": task.value, "seed": int(seed),
                               **({"fold": int(fold[0]), "folds": int(fold[1])} if fold else {}),
                               **{k: v for k, v in info.items()},
                               "n_cells": {k: int(counts.get(k, 0)) for k in ("train", "val", "test")}}
    return adata
