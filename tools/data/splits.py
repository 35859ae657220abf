"""Seeded train/val/test splits for the three task kinds (SPEC section 1).

The unit held out is a condition (unseen perturbation), a whole context (unseen cell context:
a cell type within a dataset) or a combination whose singles stay in training (unseen
combination). Control cells carry no condition, so they are shuffled within each context and
cut in the same ratios as the conditions; they are inputs for every split, never targets.
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


def unseen_perturbation(obs: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    conds = perturbed_conditions(obs)
    if len(conds) < 3:
        raise InputError(f"unseen-perturbation needs at least 3 perturbations, found {len(conds)}",
                         where="--task unseen-perturbation", fix="use more perturbations or another task kind")
    rest, test = carve(conds, TEST_FRACTION, rng)
    train, val = carve(rest, VAL_FRACTION, rng)
    split = assign_conditions(obs, train, val, test)
    split_controls(obs, split, {"train": len(train), "val": len(val), "test": len(test)}, rng)
    return split, {"train_conditions": train, "val_conditions": val, "test_conditions": test}


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


def unseen_cell_context(obs: pd.DataFrame, rng: np.random.Generator,
                        hold_out: list[str] | None = None) -> tuple[np.ndarray, dict]:
    ctx = context_labels(obs)
    pert = ~obs["is_control"].astype(bool)
    by_ctx = {c: set(obs.loc[pert & (ctx == c), "condition_name"].astype(str)) for c in sorted(ctx.unique())}
    if len(by_ctx) < 2:
        raise InputError(f"unseen-cell-context needs at least 2 contexts (dataset, cell type), found {len(by_ctx)}",
                         where="--task unseen-cell-context", fix="add a dataset or cell type, or use another task kind")
    # hold out a context whose perturbations are also seen elsewhere, so the test asks about
    # known perturbations in an unknown context
    shared = [c for c, s in by_ctx.items() if s & set().union(*(t for d, t in by_ctx.items() if d != c))]
    pool = shared or sorted(by_ctx)
    held = match_contexts(hold_out, sorted(by_ctx)) if hold_out else [pool[int(rng.integers(len(pool)))]]
    if len(held) == len(by_ctx):
        raise InputError("holding out every cell context leaves nothing to train on", where="hold out",
                         fix="name fewer cell types")
    test_ctx = held[0]
    in_test = ctx.isin(held).to_numpy()
    train_conds = sorted(set().union(*(s for c, s in by_ctx.items() if c not in held)))
    others = [c for c in pool if c not in held] if len(by_ctx) - len(held) >= 2 else []
    if others:
        # validation asks the task's own question: a second whole context held out from training
        val_ctx = others[int(rng.integers(len(others)))]
        split = np.full(len(obs), "train", dtype=object)
        split[(ctx == val_ctx).to_numpy()] = "val"
        split[in_test] = "test"
        return split, {"test_context": test_ctx, "test_contexts": held, "val_context": val_ctx,
                       "train_conditions": train_conds}
    rest, val = carve(train_conds, VAL_FRACTION, rng)
    split = np.full(len(obs), "train", dtype=object)
    split[(~in_test) & obs["condition_name"].astype(str).isin(val).to_numpy()] = "val"
    split_controls(obs, split, {"train": len(rest), "val": len(val)}, rng, rows=~in_test)
    split[in_test] = "test"
    return split, {"test_context": test_ctx, "test_contexts": held, "val_conditions": val, "train_conditions": rest}


def unseen_combination(obs: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    conds = perturbed_conditions(obs)
    singles = {c for c in conds if COMBO_SEP not in c}
    combos = [c for c in conds if COMBO_SEP in c]
    eligible = sorted(c for c in combos if all(p in singles for p in split_condition(c)))
    if not eligible:
        raise InputError(f"unseen-combination needs a combination A+B whose singles A and B are also measured; "
                         f"found {len(combos)} combinations, none with both singles",
                         where="--task unseen-combination", fix="use unseen-perturbation for this dataset")
    if len(eligible) == 1:
        rest, test = [], eligible
    else:
        rest, test = carve(eligible, TEST_FRACTION, rng)
    others = sorted(set(combos) - set(eligible))
    if rest:
        rest, val = carve(rest, VAL_FRACTION, rng) if len(rest) > 1 else ([], rest)
    else:
        others, val = carve(others, VAL_FRACTION, rng) if others else ([], [])
    train = sorted(singles) + sorted(set(rest) | set(others))
    split = assign_conditions(obs, train, val, test)
    split_controls(obs, split, {"train": len(train), "val": len(val), "test": len(test)}, rng)
    return split, {"train_conditions": train, "val_conditions": val, "test_conditions": test}


KINDS = {
    TaskKind.unseen_perturbation: unseen_perturbation,
    TaskKind.unseen_cell_context: unseen_cell_context,
    TaskKind.unseen_combination: unseen_combination,
}


def assign_splits(adata: AnnData, task: TaskKind | str, seed: int = 0, hold_out: list[str] | None = None) -> AnnData:
    """Set ``obs['split']`` (train/val/test) and ``uns['split_info']``; returns ``adata``.

    ``hold_out`` names the cell types (or ``dataset|cell type`` contexts) the test must hold out."""
    task = TaskKind.parse(task) if isinstance(task, str) else task
    rng = np.random.default_rng(seed)
    if hold_out and task != TaskKind.unseen_cell_context:
        raise InputError(f"holding out cell types needs the unseen-cell-context task, not {task.value}",
                         where="hold out", fix="use --task unseen-cell-context or drop the hold-out")
    split, info = (KINDS[task](adata.obs, rng, hold_out) if hold_out else KINDS[task](adata.obs, rng))
    adata.obs[SPLIT] = pd.Categorical(split, categories=["train", "val", "test"])
    counts = adata.obs[SPLIT].value_counts()
    adata.uns["split_info"] = {"task": task.value, "seed": int(seed),
                               **{k: v for k, v in info.items()},
                               "n_cells": {k: int(counts.get(k, 0)) for k in ("train", "val", "test")}}
    return adata
