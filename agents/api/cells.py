"""Cells for a prediction (``--cells N``): N per (perturbation, context).

Every query's cells start from N control cells of its context drawn from the run's unified data
(the same draw for every perturbation asked in that context, so the cells of two perturbations
differ only by what the model says; without replacement unless the context has fewer than N
controls). Then:

- a generative model (``generative/...``: a distribution P(x | x_ctrl, p)) samples one cell from
  each drawn control cell in the sandbox;
- every other model predicts a mean only, so the cells are the standard shift construction: each
  drawn control cell plus the predicted delta (prediction minus the context's control mean). They
  carry the control cells' own variability, not a predicted change in it.

Both live in the data's log-normalised space and are clipped at 0, where that space ends.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from anndata import AnnData

from harmonycell.tools.data.taskdata import dense
from harmonycell.tools.errors import InputError
from harmonycell.tools.schema import context_labels
from harmonycell.tools.search.actions import parse_action

SHIFTED = "control cells + predicted shift"
SAMPLED = "generative model's samples, one per control cell"


def check_cells(cells: int | None) -> None:
    if cells is None:
        return
    if isinstance(cells, bool) or not isinstance(cells, (int, np.integer)) or cells < 1:
        raise InputError(f"--cells {cells!r} asks for no cells", where="--cells",
                         fix="give a positive number of cells per (perturbation, context), e.g. --cells 100")


def generative(action: str) -> bool:
    return parse_action(action).paradigm == "generative"


def draw_controls(adata: AnnData, contexts: list[str], n: int, seed: int) -> np.ndarray:
    """(queries, n) positions among the data's control cells (in their order in the data, the
    order of the sandbox's controls.npz): each query's n draws from its context's controls."""
    ctrl_rows = np.flatnonzero(adata.obs["is_control"].astype(bool).to_numpy())
    ctrl_ctx = context_labels(adata.obs).to_numpy()[ctrl_rows]
    out = np.zeros((len(contexts), n), np.int64)
    for i, ctx in enumerate(contexts):
        pool = np.flatnonzero(ctrl_ctx == ctx)
        if len(pool) == 0:
            raise InputError(f"context {ctx!r} has no control cell to start cells from", where="--cells",
                             fix="ask without --cells for this context")
        # seeded by the context's name: the same cells for every perturbation asked in it
        rng = np.random.default_rng([seed, int(hashlib.sha256(ctx.encode()).hexdigest()[:8], 16)])
        out[i] = rng.choice(pool, size=n, replace=len(pool) < n)
    return out


def shifted(adata: AnnData, draws: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """(queries, n, genes): the drawn control cells plus each query's predicted delta, clipped at 0."""
    ctrl_rows = np.flatnonzero(adata.obs["is_control"].astype(bool).to_numpy())
    X = dense(adata.X[ctrl_rows[draws.ravel()]]).reshape(*draws.shape, adata.n_vars)
    return np.clip(X + delta[:, None, :], 0.0, None).astype(np.float32)


def cells_anndata(means: AnnData, adata: AnnData, draws: np.ndarray, cells: np.ndarray, how: str,
                  seed: int) -> AnnData:
    """One observation per cell: the query's obs (perturbation, context, canonical columns),
    ``predicted=True``, ``sampled_from`` and the control cell it started from."""
    n = draws.shape[1]
    ctrl_rows = np.flatnonzero(adata.obs["is_control"].astype(bool).to_numpy())
    src = ctrl_rows[draws.ravel()]
    q = np.repeat(np.arange(means.n_obs), n)
    obs = means.obs.iloc[q].reset_index(drop=True)
    obs["donor_id"] = adata.obs["donor_id"].astype(str).to_numpy()[src] if "donor_id" in adata.obs else "unknown"
    obs["query"] = means.obs_names.to_numpy()[q]
    obs["sampled_from"] = how
    obs["control_cell"] = adata.obs_names.to_numpy()[src]
    obs.index = pd.Index([f"{name}#{j}" for name, j in zip(obs["query"], np.tile(np.arange(n), means.n_obs))])
    out = AnnData(X=np.clip(cells.reshape(-1, means.n_vars), 0.0, None).astype(np.float32), obs=obs,
                  var=means.var.copy())
    info = dict(means.uns["harmonycell"])
    info.pop("delta", None)
    if info.pop("spread", None):  # a layer of the means, not of these cells
        info["uncertainty"] = "per (perturbation, context), of the predicted means: " + info["uncertainty"]
    info["cells"] = {
        "per_query": n, "seed": seed, "sampled_from": how,
        "what": (f"{n} cells per (perturbation, context), each started from a control cell of the context drawn "
                 f"from the run's data (seed {seed}, the same draw for every perturbation in a context; obs "
                 "'control_cell' names it); "
                 + ("the model is generative: one sample of it per control cell"
                    if how == SAMPLED else
                    "the model is not generative (it predicts a mean only): each cell is its control cell plus the "
                    "predicted delta, so it carries the control cells' variability, not a predicted one")
                 + "; log-normalised expression, clipped at 0"),
    }
    out.uns["harmonycell"] = info
    return out
