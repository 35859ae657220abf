"""Known answers for the headline (issue 26, SPEC section 7): a predictor that is the same for
every query of a context scores exactly chance, the perturbed genes never count, shrinking the
truth toward control never scores higher, and the split-half noise ceiling stands far from the
negative controls on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harmonycell.tools.evaluation.baselines import baseline_predictions, compute_baselines
from harmonycell.tools.evaluation.ceiling import NOISE_CEILING, noise_ceiling
from harmonycell.tools.evaluation.metrics import (
    FALLBACK_METRIC,
    HEADLINE_CHANCE,
    SEARCH_METRIC,
    headline_of,
    pool_target_genes,
    pools,
    score,
)
from harmonycell.tools.evaluation.pseudobulk import targets_for
from metrics_data import make_canonical

REAL = Path(__file__).parents[1] / ".." / "shared" / "data" / "real"


@pytest.fixture(scope="module")
def task():
    ad = make_canonical(n_perts=40, n_genes=60, contexts=("LineA", "LineB"), seed=7)
    return ad, targets_for(ad, "test")


def _headline(t, pred):
    return score(t, pred).aggregate[SEARCH_METRIC]


def test_context_constant_predictors_score_exactly_chance(task):
    ad, t = task
    assert all(len(p) > 1 for p in pools(t)) and len(pools(t)) == 2  # two contexts, both pooled
    rng = np.random.default_rng(0)
    s = rng.normal(0, 1, t.y.shape[1])
    preds = baseline_predictions(ad, "test")
    constant = {"control mean": t.y_ctrl, "train mean": preds["train_mean"],
                "training centroid": t.pert_mean_train,
                **{f"y_ctrl + {a} s": t.y_ctrl + a * s for a in (0.1, 1.0, 5.0)}}
    for name, pred in constant.items():
        rep = score(t, pred)
        for ctx, agg in rep.per_context.items():
            assert agg[SEARCH_METRIC] == pytest.approx(HEADLINE_CHANCE, abs=1e-12), (name, ctx)
    assert _headline(t, t.y) == pytest.approx(1.0)  # the truth picks itself out


def test_perturbed_genes_of_every_held_out_query_never_count(task):
    _, t = task
    rng = np.random.default_rng(1)
    pred = t.y + rng.normal(0, 0.3, t.y.shape)
    base = score(t, pred).per_perturbation
    moved = pred.copy()
    for idx in pools(t):  # pools of queries
        cols = pool_target_genes(t, idx)
        assert len(cols) == len(idx)  # every query here perturbs one measured gene
        moved[np.ix_(idx, cols)] += rng.normal(0, 50, (len(idx), len(cols)))
    after = score(t, moved).per_perturbation
    assert [r.metrics[SEARCH_METRIC] for r in after] == [r.metrics[SEARCH_METRIC] for r in base]
    # the one-line trick: train mean with the query's own target lowered by 1 is still chance
    tm = baseline_predictions(task[0], "test")["train_mean"]
    trick = tm.copy()
    for q, genes in enumerate(t.target_genes):
        trick[q, genes] -= 1.0
    assert _headline(t, trick) == pytest.approx(HEADLINE_CHANCE, abs=1e-12)


@pytest.mark.parametrize("a", [0.0, 0.05, 0.3, 0.7, 0.95])
def test_shrinking_the_truth_toward_control_never_scores_higher(task, a):
    _, t = task
    shrunk = score(t, t.y_ctrl + a * (t.y - t.y_ctrl))
    full = score(t, t.y)
    for s, f in zip(shrunk.per_perturbation, full.per_perturbation):
        assert s.metrics[SEARCH_METRIC] <= f.metrics[SEARCH_METRIC]
    assert shrunk.aggregate[SEARCH_METRIC] <= full.aggregate[SEARCH_METRIC]


def test_single_query_contexts_are_pooled_and_a_lone_query_falls_back():
    # one perturbation in three contexts, one context held out per split (Kang-like)
    ad = make_canonical(n_perts=1, contexts=("T", "B", "NK"), hold_context="NK", seed=13)
    ad = ad[ad.obs["condition_name"].isin(["control", "G000"]).to_numpy()].copy()
    t = targets_for(ad, "test")
    assert len(t.queries) == 1 and pools(t) == []
    rep = compute_baselines(ad, "test", t)
    tm = rep.baselines["train_mean"]
    assert tm[SEARCH_METRIC] is None  # nothing to rank against
    assert headline_of(tm)[0] == FALLBACK_METRIC and tm[FALLBACK_METRIC] is not None
    assert rep.baselines["control_mean"][FALLBACK_METRIC] is None  # no predicted shift: n/a


def _unified(name: str, task: str):
    from harmonycell.tools.data.unify import unify

    return unify([REAL / name], task=task, seed=0).adata


@pytest.mark.parametrize("name", ["norman_mcfaline_perturbench_devel.h5ad", "papalexi_eccite_lowmoi.h5ad"])
def test_noise_ceiling_stands_far_from_the_negative_controls_on_real_data(name):
    ad = _unified(name, "unseen-perturbation")
    rep = compute_baselines(ad, "test")
    ceiling = rep.baselines[NOISE_CEILING][SEARCH_METRIC]
    for neg in ("control_mean", "train_mean"):
        assert rep.baselines[neg][SEARCH_METRIC] == pytest.approx(HEADLINE_CHANCE)
    assert ceiling > HEADLINE_CHANCE + 0.25, ceiling
    assert NOISE_CEILING not in rep.per_query  # never a baseline to beat


def test_noise_ceiling_on_a_single_held_out_context_uses_the_fallback():
    ad = _unified("kang_scgen_valid.h5ad", "unseen-cell-context")
    rep = compute_baselines(ad, "test")
    ceiling = rep.baselines[NOISE_CEILING][FALLBACK_METRIC]
    assert ceiling is not None and rep.baselines["control_mean"][FALLBACK_METRIC] is None
    assert ceiling > rep.baselines["train_mean"][FALLBACK_METRIC]


def test_the_split_half_is_a_real_half_of_each_query(task):
    ad, t = task
    rep = noise_ceiling(ad, "test", t)
    assert rep.aggregate[SEARCH_METRIC] > 0.9  # synthetic effects are strong
    assert noise_ceiling(ad, "test", t).aggregate == rep.aggregate  # seeded
