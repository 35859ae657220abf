"""Shared helpers for the unify tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

REAL = Path(__file__).parents[1] / ".." / "shared" / "data" / "real"


def real(name: str) -> Path:
    return REAL / f"{name}.h5ad"


def small_h5ad(path: Path, obs: dict, X=None, var_names=None, obs_names=None, n_genes: int = 30, seed: int = 0) -> Path:
    """A small raw-count AnnData written to ``path``."""
    obs_df = pd.DataFrame(obs)
    n = len(obs_df)
    rng = np.random.default_rng(seed)
    if X is None:
        X = sp.csr_matrix(rng.poisson(2.0, size=(n, n_genes)).astype(np.float32))
    n_genes = X.shape[1]
    obs_df.index = obs_names if obs_names is not None else [f"c{i}" for i in range(n)]
    var = pd.DataFrame(index=var_names if var_names is not None else [f"GENE{i}" for i in range(n_genes)])
    a = ad.AnnData(X=X, obs=obs_df, var=var)
    a.write_h5ad(path)
    return path


def canonical_frame(a: ad.AnnData) -> pd.DataFrame:
    """obs fields that must agree between schema variants, in a comparable form."""
    cols = ["cell_type", "batch_id", "donor_id", "pert_type", "is_control", "condition_name"]
    return a.obs[cols].astype(str).reset_index(drop=True)


def dense(m) -> np.ndarray:
    return m.toarray() if sp.issparse(m) else np.asarray(m)
