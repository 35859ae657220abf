"""Properties every metric must have, on random targets and predictions (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from harmonycell.tools.evaluation.metrics import score
from harmonycell.tools.evaluation.pseudobulk import Targets
from harmonycell.tools.data.taskdata import Query


def random_targets(seed: int, q: int, g: int, n_ctx: int) -> Targets:
    rng = np.random.default_rng(seed)
    ctx = np.arange(q) % n_ctx
    base = rng.normal(2, 1, (n_ctx, g))
    shared = rng.normal(0, 0.5, g)
    y_ctrl = base[ctx]
    y = y_ctrl + shared + rng.normal(0, 0.5, (q, g))
    return Targets(
        split="test", queries=[Query(f"P{i}", f"c{ctx[i]}") for i in range(q)],
        genes=[f"g{i}" for i in range(g)], y=y, y_ctrl=y_ctrl, y_ctrl_train=y_ctrl,
        pert_mean_train=y_ctrl + shared, n_cells=np.full(q, 10), n_ctrl=np.full(q, 50),
        contexts=[f"c{i}" for i in range(n_ctx)], query_context=ctx,
        target_genes=[[i % g] for i in range(q)])


cases = st.tuples(st.integers(0, 10_000), st.integers(2, 30), st.integers(3, 60), st.integers(1, 3))


@settings(max_examples=40, deadline=None)
@given(cases, st.floats(0.05, 20.0), st.floats(-5.0, 5.0))
def test_invariances_and_bounds(case, scale, offset):
    t = random_targets(*case)
    rng = np.random.default_rng(case[0] + 1)
    pred = t.y + rng.normal(0, 1.0, t.y.shape)
    base = score(t, pred)
    # Pearson of deltas ignores a positive rescaling of the predicted delta and a constant offset
    moved = score(t, t.y_ctrl + scale * (pred - t.y_ctrl) + offset)
    for a, b in zip(base.per_perturbation, moved.per_perturbation):
        assert np.isclose(a.metrics["DeltaPCC"], b.metrics["DeltaPCC"], atol=1e-9)
    # cosine ignores rescaling only
    scaled = score(t, t.y_ctrl + scale * (pred - t.y_ctrl))
    for a, b in zip(base.per_perturbation, scaled.per_perturbation):
        assert np.isclose(a.metrics["Cosine_delta"], b.metrics["Cosine_delta"], atol=1e-9)
    for r in base.per_perturbation:
        m = r.metrics
        assert m["RMSE"] >= 0
        for k in ("DeltaPCC", "Cosine_delta", "PCC_Delta_shift_corrected"):
            assert -1 <= m[k] <= 1
        for k in ("rank_rmse", "rank_cosine", "rank_pcc", "Discrimination_score"):
            assert m[k] is None or 0 <= m[k] <= 1
    assert base.aggregate["Matrix_Distance"] >= 0


@settings(max_examples=25, deadline=None)
@given(cases)
def test_null_exactly_where_the_predicted_shift_is_flat(case):
    t = random_targets(*case)
    pred = t.y.copy()
    flat = np.arange(len(pred)) % 2 == 0
    pred[flat] = t.y_ctrl[flat] + 0.3  # a uniform shift: no pattern across genes
    rep = score(t, pred)
    for i, r in enumerate(rep.per_perturbation):
        assert (r.metrics["DeltaPCC"] is None) == bool(flat[i])
        assert r.metrics["Cosine_delta"] is not None  # a uniform non-zero shift has a direction
    assert rep.aggregate["DeltaPCC"] is None  # never averaged over the defined ones only
    assert rep.null_counts["DeltaPCC"] == int(flat.sum())


@settings(max_examples=25, deadline=None)
@given(cases)
def test_row_order_follows_queries(case):
    t = random_targets(*case)
    rng = np.random.default_rng(case[0])
    pred = t.y + rng.normal(0, 0.5, t.y.shape)
    rep = score(t, pred)
    # scoring row i alone (a one-query Targets) gives row i's per-perturbation numbers
    i = int(rng.integers(len(t.queries)))
    one = Targets(split="test", queries=[t.queries[i]], genes=t.genes, y=t.y[i:i + 1],
                  y_ctrl=t.y_ctrl[i:i + 1], y_ctrl_train=t.y_ctrl_train[i:i + 1],
                  pert_mean_train=t.pert_mean_train[i:i + 1], n_cells=t.n_cells[i:i + 1],
                  n_ctrl=t.n_ctrl[i:i + 1], contexts=t.contexts, query_context=t.query_context[i:i + 1],
                  target_genes=[t.target_genes[i]])
    alone = score(one, pred[i:i + 1]).per_perturbation[0].metrics
    for k in ("RMSE", "DeltaPCC", "Cosine_delta", "PCC_Delta_shift_corrected"):
        assert np.isclose(alone[k], rep.per_perturbation[i].metrics[k])
