"""Engine pieces that must match their plain (memory-hungry) equivalents exactly."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from harmonycell.tools.data.audit import fingerprint_matrix
from harmonycell.tools.data.unify import drop_rows_inplace


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), density=st.floats(0.0, 0.6), seed=st.integers(0, 10**6),
       p_keep=st.floats(0.0, 1.0))
def test_drop_rows_inplace_equals_fancy_indexing(n, density, seed, p_keep):
    rng = np.random.default_rng(seed)
    X = sp.random(n, 17, density=density, format="csr", random_state=seed, dtype=np.float32)
    keep = rng.random(n) < p_keep
    expected = X[np.flatnonzero(keep)].toarray()
    got = drop_rows_inplace(X.copy(), keep)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.toarray(), expected)


def test_fingerprint_matrix_values():
    X = sp.csr_matrix(np.array([[0, 2, 3], [0, 0, 0], [1, 0, 5]], dtype=np.float32))
    f = fingerprint_matrix(X)
    assert (f.min, f.max, f.is_integer, f.looks_raw_counts) == (0.0, 5.0, True, True)
    assert abs(f.sparsity - 5 / 9) < 1e-12
    assert (f.cell_sum_min, f.cell_sum_median, f.cell_sum_max) == (0.0, 5.0, 6.0)
    g = fingerprint_matrix(sp.csr_matrix(np.log1p(X.toarray())))
    assert not g.is_integer and g.looks_log_normalised


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), density=st.floats(0.0, 0.8), seed=st.integers(0, 10**6), bad=st.booleans())
def test_fingerprint_in_pieces_counts_varying_genes_like_numpy(n, density, seed, bad):
    """Per-gene sums are taken piece by piece (no float64 copy of X): the same count of varying
    genes as numpy's variance over the whole matrix, non-finite values counted as 0."""
    import harmonycell.tools.data.audit as audit

    X = sp.random(n, 13, density=density, format="csr", random_state=seed, dtype=np.float32)
    X.data = np.round(X.data * 10)
    if bad and X.nnz:
        X.data[0] = np.nan
    D = np.nan_to_num(X.toarray().astype(np.float64), nan=0.0)
    sq = (D * D).mean(0)
    expected = int(np.count_nonzero(sq - D.mean(0) ** 2 > 1e-12 * np.maximum(1.0, sq)))
    old = audit.PIECE
    try:
        for piece in (old, 3):
            audit.PIECE = piece
            f = fingerprint_matrix(X)
            assert f.genes_varying == expected and f.n_nonfinite == int(bad and X.nnz > 0)
    finally:
        audit.PIECE = old


def test_an_audit_made_earlier_is_carried_not_made_again(tmp_path):
    from harmonycell.tools.data.audit import audit_h5ad
    from harmonycell.tools.data.unify import unify
    from unify_helpers import small_h5ad

    conds = ["control"] * 30 + [f"G{i}" for i in range(6) for _ in range(10)]
    path = small_h5ad(tmp_path / "d.h5ad", {"perturbation": conds, "cell_type": ["K562"] * len(conds)})
    made = audit_h5ad(path)
    marked = made.model_copy(update={"x": made.x.model_copy(update={"reason": "made at the door"})})
    got = unify([path], audits={"d": marked}).audits["d"]
    assert got.x.reason == "made at the door"  # carried as given
    other = marked.model_copy(update={"n_cells": made.n_cells + 1})  # not this file as read now
    assert unify([path], audits={"d": other}).audits["d"].x.reason != "made at the door"
