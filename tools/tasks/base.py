"""What every task kind is: one object owning its split, its unit's name, its leak rule, the
Judge's integrity check and the unit the sandbox's early stopping holds out (SPEC sections 1, 7).

A kind lives in its own module and is registered in ``registry``; nothing else names it. The
helpers below are the rules the kinds share: the 8:2 cut (or fold k of K), validation carved from
the training units, control cells partitioned within each context in the same ratios.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import pandas as pd

from harmonycell.tools.errors import InputError
from harmonycell.tools.schema import CONTROL_LABEL, SPLIT, context_labels, split_condition

TEST_FRACTION = 0.2
VAL_FRACTION = 0.15  # of the training units

# words that say "not done" in front of a verb ("genes nobody tested", "a cell type we never
# measured"), shared by the kinds' cues
NEVER = r"(?:nobody|no\s+one|no-one|never|not\s+yet|(?:have|has|had|did|do)(?:n't|\s+not)(?:\s+yet)?)"


class Kind(ABC):
    """One task kind. ``name`` is what ``--task`` says (and what run records store); ``unit`` names
    one held-out unit (as ``split.json`` records it); ``inner_unit`` is what the sandbox's inner
    split for early stopping holds out of the training cells: ``condition`` or ``context``.

    The chat reads a kind from a person's words with its ``cues`` (case-insensitive regular
    expressions, the first that matches is quoted back), trying kinds in ``cue_priority`` order
    (lower first, then registration order): the first kind whose cue matches decides, the others
    that match are reported as ambiguous. ``description`` restates the kind to the person (and
    to an LLM reading the request); ``question`` is how the chat's task question offers it;
    ``example`` is words a person may type to pick it."""

    name: ClassVar[str]
    unit: ClassVar[str]
    inner_unit: ClassVar[str] = "condition"
    takes_hold_out: ClassVar[bool] = False  # whether the person may name the units to hold out
    answers_combinations: ClassVar[bool] = False  # its test asks about combinations A+B

    description: ClassVar[str]
    question: ClassVar[str] = ""  # "": the description
    example: ClassVar[str] = ""  # "": the name
    cues: ClassVar[tuple[str, ...]] = ()
    cue_priority: ClassVar[int] = 100

    @abstractmethod
    def split(self, obs: pd.DataFrame, rng: np.random.Generator, fold: tuple[int, int] | None = None,
              hold_out: list[str] | None = None) -> tuple[np.ndarray, dict]:
        """(train/val/test per cell, the split's record: its units and the rule that made them)."""

    @abstractmethod
    def held_out(self, info: dict) -> dict[str, list[str]]:
        """split -> the units it holds out, read from the split's own record (split.json)."""

    @abstractmethod
    def integrity(self, adata) -> tuple[list[str], str, int]:
        """The split keeps the task's promise, checked at the level it promises:
        (problems, plural noun of what is held out, how many are held out)."""

    @abstractmethod
    def leaked(self, meta: dict, train_contexts: set[str]) -> set[str]:
        """Test queries (from the sandbox's meta.json) that the sandbox's training data answers."""

    def noun(self, crispr_only: bool) -> str:
        """Plural noun of the held-out unit, for a headline."""
        return self.unit + "s"

    def test_units(self, info: dict) -> list[str]:
        return list(self.held_out(info).get("test", []))

    def asked_as(self) -> str:
        return self.question or self.description

    def example_words(self) -> str:
        return self.example or self.name


# --- rules the kinds share ----------------------------------------------------------------------
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


def perturbed(obs: pd.DataFrame) -> pd.DataFrame:
    return obs[~obs["is_control"].astype(bool)]


def units_by_split(obs: pd.DataFrame) -> dict[str, set[str]]:
    """Single perturbations inside the conditions of each split."""
    pert = perturbed(obs)
    return {s: {u for c in pert.loc[pert[SPLIT] == s, "condition_name"].astype(str).unique()
                for u in split_condition(c)} for s in ("train", "val", "test")}
