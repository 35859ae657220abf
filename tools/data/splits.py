"""Seeded train/val/test splits (SPEC sections 1 and 7): ``obs['split']`` and its record.

What a task holds out, and how, belongs to its kind (``harmonycell.tools.tasks``); here the
kind's split is applied to an AnnData. ``fold=(k, K)`` replaces the single 80:20 cut by fold k of
a seeded K-fold partition of the units (nested cross-validation: validation is still carved from
the fold's training units). The rules that made a split are written into ``split_info["rule"]``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from harmonycell.tools.errors import InputError
from harmonycell.tools.schema import SPLIT
from harmonycell.tools.tasks.registry import KINDS, hold_out_kind, task_kind
from harmonycell.tools.tasks.unseen_cell_context import KIND as _CELL_CONTEXT
from harmonycell.tools.tasks.unseen_cell_context import match_contexts
from harmonycell.tools.tasks.unseen_cell_context import unit_key as _unit_key  # the chat's name for it

__all__ = ["KINDS", "assign_splits", "match_contexts", "_unit_key", "unseen_cell_context"]


def unseen_cell_context(obs: pd.DataFrame, rng: np.random.Generator, fold=None,
                        hold_out: list[str] | None = None) -> tuple[np.ndarray, dict]:
    return _CELL_CONTEXT.split(obs, rng, fold, hold_out)


def assign_splits(adata: AnnData, task: str, seed: int = 0,
                  fold: tuple[int, int] | None = None, hold_out: list[str] | None = None) -> AnnData:
    """Set ``obs['split']`` (train/val/test) and ``uns['split_info']``; returns ``adata``.
    ``fold=(k, K)``: the test units are fold k of a seeded K-fold partition.
    ``hold_out`` names the cell types (or ``dataset|cell type`` contexts) the test must hold out."""
    kind = task_kind(task)
    rng = np.random.default_rng(seed)
    if hold_out and not kind.takes_hold_out:
        wanted = hold_out_kind().name
        raise InputError(f"holding out cell types needs the {wanted} task, not {kind.name}",
                         where="hold out", fix=f"use --task {wanted} or drop the hold-out")
    split, info = kind.split(adata.obs, rng, fold, hold_out or None)
    adata.obs[SPLIT] = pd.Categorical(split, categories=["train", "val", "test"])
    counts = adata.obs[SPLIT].value_counts()
    adata.uns["split_info"] = {"task": kind.name, "seed": int(seed),
                               **({"fold": int(fold[0]), "folds": int(fold[1])} if fold else {}),
                               **info,
                               "n_cells": {k: int(counts.get(k, 0)) for k in ("train", "val", "test")}}
    return adata
