"""Known-answer tests of harmonycell.tools.evaluation.metrics.score on canonical AnnData."""

from __future__ import annotations

import numpy as np
import pytest

from harmonycell.tools.errors import PredictionError
from harmonycell.tools.evaluation.metrics import METRIC_NAMES, score, validate_predictions
from harmonycell.tools.evaluation.pseudobulk import targets_for
from harmonycell.tools.data.taskdata import queries_for
from metrics_data import make_canonical


@pytest.fixture(scope="module")
def targets():
    return targets_for(make_canonical(n_perts=40, seed=1), "test")


def test_perfect_prediction(targets):
    agg = score(targets, targets.y).aggregate
    assert set(agg) == set(METRIC_NAMES)
    assert agg["DeltaPCC"] == pytest.approx(1.0) and agg["RMSE"] == pytest.approx(0.0, abs=1e-12)
    assert agg["Cosine_delta"] == pytest.approx(1.0)
    assert agg["PCC_Delta_shift_corrected"] == pytest.approx(1.0)
    assert agg["Matrix_Distance"] == pytest.approx(0.0, abs=1e-12)
    for k in ("Mean_rank_rmse", "LogFC_rank_cosine", "LogFC_rank_pcc"):
        assert agg[k] == 0.0
    assert agg["Discrimination_score"] == 1.0 and agg["PCC_Delta_topDE"] == pytest.approx(1.0)


def test_control_mean_prediction_has_no_correlation(targets):
    # float32, as the sandbox writes it: rounding must not turn into a correlation
    rep = score(targets, targets.y_ctrl.astype(np.float32))
    agg = rep.aggregate
    assert agg["DeltaPCC"] is None and agg["Cosine_delta"] is None
    assert rep.null_counts["DeltaPCC"] == len(targets.queries)
    assert all(r.metrics["DeltaPCC"] is None for r in rep.per_perturbation)
    delta = targets.y - targets.y_ctrl
    rms_delta = np.sqrt((delta ** 2).mean(1)).mean()
    assert agg["RMSE"] == pytest.approx(rms_delta, rel=1e-6)
    assert agg["Matrix_Distance"] == pytest.approx(1.0, rel=1e-6)
    # all predictions identical within a context: ranks are exactly random
    assert agg["Mean_rank_rmse"] == pytest.approx(0.5)


def test_sign_flipped_delta(targets):
    agg = score(targets, 2 * targets.y_ctrl - targets.y).aggregate
    assert agg["DeltaPCC"] == pytest.approx(-1.0) and agg["Cosine_delta"] == pytest.approx(-1.0)
    assert agg["Matrix_Distance"] == pytest.approx(2.0)


def test_permuted_perturbations_rank_near_half():
    t = targets_for(make_canonical(n_perts=200, n_genes=80, cells_per=8, contexts=("A",), seed=3),
                    "test")
    rng = np.random.default_rng(0)
    ranks = []
    for _ in range(20):
        perm = rng.permutation(len(t.queries))
        ranks.append(score(t, t.y[perm]).aggregate["Discrimination_score"])
    assert len(t.queries) >= 40
    assert abs(np.mean(ranks) - 0.5) < 0.05
    assert score(t, t.y).aggregate["Discrimination_score"] == 1.0


def test_shared_shift_inflates_deltapcc_but_not_shift_corrected(targets):
    # predict every perturbation as the mean perturbed training cell: the known trap
    agg = score(targets, targets.pert_mean_train).aggregate
    assert agg["DeltaPCC"] > 0.3
    assert agg["PCC_Delta_shift_corrected"] is None  # y^ - m is exactly zero


def test_per_context_and_rows(targets):
    rep = score(targets, targets.y)
    assert set(rep.per_context) == set(targets.contexts)
    assert [(r.condition, r.context) for r in rep.per_perturbation] == [
        (q.condition, q.context) for q in targets.queries]
    assert all(r.n_cells > 0 for r in rep.per_perturbation)
    assert "DeltaPCC" in rep.definitions


def test_query_order_matches_taskdata():
    ad = make_canonical(seed=2)
    assert targets_for(ad, "val").queries == queries_for(ad, "val")


def test_sparse_and_dense_agree():
    a = targets_for(make_canonical(seed=4), "test")
    b = targets_for(make_canonical(seed=4, sparse=True), "test")
    np.testing.assert_allclose(a.y, b.y, rtol=1e-6)
    np.testing.assert_allclose(a.pert_mean_train, b.pert_mean_train, rtol=1e-6)


def test_pseudobulk_matches_plain_means():
    ad = make_canonical(seed=5)
    t = targets_for(ad, "test")
    X, obs = ad.X, ad.obs
    ctx = obs["dataset_id"].astype(str) + "|" + obs["cell_type"].astype(str)
    for i, q in enumerate(t.queries):
        sel = ((obs["split"] == "test") & (obs["condition_name"] == q.condition) & (ctx == q.context)).to_numpy()
        np.testing.assert_allclose(t.y[i], X[sel].mean(0), rtol=1e-5)
        ctrl = (obs["is_control"] & (ctx == q.context)).to_numpy()  # every control of the context
        np.testing.assert_allclose(t.y_ctrl[i], X[ctrl].mean(0), rtol=1e-5)
        pm = ((obs["split"] == "train") & ~obs["is_control"] & (ctx == q.context)).to_numpy()
        np.testing.assert_allclose(t.pert_mean_train[i], X[pm].mean(0), rtol=1e-5)


# ------------------------------------------------------------ bad input

def test_rejects_wrong_shape(targets):
    with pytest.raises(PredictionError, match="shape"):
        score(targets, targets.y[:-1])
    with pytest.raises(PredictionError, match="shape"):
        score(targets, targets.y[:, :-1])


def test_rejects_nan_and_inf(targets):
    p = targets.y.copy()
    p[0, 3] = np.nan
    p[1, 2] = np.inf
    with pytest.raises(PredictionError, match="2 NaN/inf values in 2 rows"):
        score(targets, p)


def test_rejects_missing_and_reordered_queries(targets):
    qs = list(targets.queries)
    with pytest.raises(PredictionError, match="missing"):
        validate_predictions(targets, targets.y, queries=qs[1:])
    with pytest.raises(PredictionError, match="order"):
        validate_predictions(targets, targets.y, queries=qs[::-1])


def test_rejects_genes_in_wrong_order(targets):
    genes = list(targets.genes)
    genes[0], genes[1] = genes[1], genes[0]
    with pytest.raises(PredictionError, match="wrong order"):
        score(targets, targets.y, genes=genes)
    with pytest.raises(PredictionError, match="genes"):
        score(targets, targets.y, genes=genes[:-1])


def test_rejects_non_numeric(targets):
    with pytest.raises(PredictionError, match="dtype"):
        score(targets, targets.y.astype(str))
