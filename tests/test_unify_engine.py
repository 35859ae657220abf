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
