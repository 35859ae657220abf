"""The spread of a prediction: an ensemble of bootstrap refits of the selected model.

Each member is the selected action path refitted on a bootstrap resample of the labelled
perturbation *units* (conditions), drawn with replacement with its own recorded seed; every
control cell is kept in every member, since controls are the model's input, not a unit. A
bootstrap and not seeds: a closed-form model (ridge, nearest-gene) refitted with another seed on
the same data gives the same answer, so seeds alone would claim zero spread. The cells of a
condition drawn twice enter twice; a model that first pools cells per perturbation (the closed-form
ones) then sees it once, so for those a member trains on the distinct drawn conditions.

The prediction itself stays the refit on every labelled unit; ``layers['spread']`` is the per-gene
standard deviation (ddof=1) of the members' predicted expression for the same query.
"""

from __future__ import annotations

import warnings

import numpy as np
from anndata import AnnData

from harmonycell.tools.errors import InputError
from harmonycell.tools.search.actions import closed_form

# Measured on Papalexi with 2 shared cores: the first `predict` of a ridge run took 7.9 s with
# --members 1 and 27.7 s with 5 members (bench/results/predict.json: about 4 s a member), so 5
# members cost a closed-form model seconds; a resnet node trains 13-17 s at 10 epochs
# (bench/results/models_papalexi.json) and up to about a minute at the default 60 with early
# stopping, so a network gets 3 (the fewest whose standard deviation is worth reading), which
# adds a few minutes to the first call. Later calls reuse the kept members.
MEMBERS_CLOSED_FORM = 5
MEMBERS_NETWORK = 3
UNIT = "condition"  # what a bootstrap resamples: the perturbation units the task labels
SPREAD_LAYER = "spread"


def default_members(action: str) -> int:
    """How many bootstrap members a refit gets unless asked otherwise (see the constants)."""
    return MEMBERS_CLOSED_FORM if closed_form(action) else MEMBERS_NETWORK


def check_members(members: int | None, refit: bool) -> None:
    if members is None:
        return
    if isinstance(members, bool) or not isinstance(members, (int, np.integer)) or members < 1:
        raise InputError(f"--members {members!r} is not a positive whole number", where="--members",
                         fix="give 1 (the full refit alone, no spread) or more bootstrap members, e.g. 5")
    if not refit and members > 1:
        raise InputError("--members needs a refit: the spread comes from bootstrap refits, and --no-refit "
                         "answers with the node as trained", where="--members",
                         fix="drop --no-refit, or drop --members")


def member_seeds(k: int) -> list[int]:
    """Member i resamples with seed i: a later call asking for more members reuses the first ones."""
    return list(range(k))


def bootstrap_units(adata: AnnData, seed: int) -> tuple[AnnData, list[str]]:
    """``adata`` with its labelled units resampled with replacement (seeded), every control kept:
    (the resample, the drawn conditions in draw order)."""
    obs = adata.obs
    ctrl = obs["is_control"].astype(bool).to_numpy()
    cond = obs["condition_name"].astype(str).to_numpy()
    units = sorted(set(cond[~ctrl]))
    if len(units) < 2:
        raise InputError(f"the run's data hold {len(units)} labelled perturbation unit(s): a bootstrap "
                         "needs at least 2", where="--members", fix="ask with --members 1 (no spread)")
    drawn = [units[i] for i in np.random.default_rng(seed).integers(0, len(units), size=len(units))]
    rows_of = {u: np.flatnonzero((cond == u) & ~ctrl) for u in units}
    # controls first, in their own order: the member's control cells line up with the full fit's
    rows = np.concatenate([np.flatnonzero(ctrl), *[rows_of[u] for u in drawn]])
    with warnings.catch_warnings():  # a unit drawn twice repeats its cells' names, made unique below
        warnings.filterwarnings("ignore", message="Observation names are not unique")
        out = adata[rows].copy()
    out.obs_names_make_unique()
    return out, drawn


def spread(member_preds: np.ndarray) -> np.ndarray:
    """(members, queries, genes) -> (queries, genes): the standard deviation over members."""
    return np.asarray(member_preds, np.float64).std(axis=0, ddof=1).astype(np.float32)


def facts(k: int, seeds: list[int], fits: list[str], shas: list[str], n_units: int) -> dict:
    """``uns['harmonycell']['spread']``: what made ``layers['spread']``, for a program to read."""
    return {"layer": SPREAD_LAYER, "statistic": "standard deviation over members (ddof=1), per gene",
            "members": k, "resampled": f"{UNIT}s, with replacement; control cells always kept", "n_units": n_units,
            "seeds": seeds, "member_fits": fits, "member_model_sha256": shas}


def sentence(spread: dict) -> str:
    """``uns['harmonycell']['uncertainty']``, said for a person, when there is a spread layer."""
    return (f"layers['{spread['layer']}']: per-gene standard deviation (ddof=1) of the predicted expression of "
            f"{spread['members']} bootstrap refits of the selected model; each refit trained on a resample, with "
            f"replacement, of the run's {spread['n_units']} labelled perturbation units ({UNIT}s; every control "
            f"cell kept), seeds {list(spread['seeds'])}. It measures how much the answer moves when the training "
            "perturbations change, not the cell-to-cell variability of the response; X is the refit on every "
            "unit, not the members' mean")


def none_because(reason: str) -> str:
    """``uns['harmonycell']['uncertainty']`` when there is none, with the reason."""
    return (f"none: {reason}; read the run's verdict (held-out comparisons with the baselines) for how far "
            "to trust it")


NO_REFIT = "--no-refit answers with the node as trained (one fit), and a spread needs bootstrap refits"
ONE_MEMBER = "--members 1 asks for the refit on every labelled unit alone, with no bootstrap members"
