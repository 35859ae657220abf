"""The "linear on gene knowledge" baseline: the linear model read through the GO embedding of
the perturbed gene, the linear (data-feature) prediction where the database does not know the
gene, said per query; absent (with the reason) where it would only repeat linear."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harmonycell.tools.data.unify import unify
from harmonycell.tools.evaluation.baselines import (
    BASELINE_DEFINITIONS,
    LINEAR_GO,
    NOT_KNOWN,
    baseline_predictions,
    compute_baselines,
    fit_linear,
    go_embedding_of,
)
from harmonycell.tools.evaluation.pseudobulk import targets_for
from harmonycell.tools.genes.db import ENV_PATH
from metrics_data import make_canonical
from unify_helpers import real


@pytest.fixture(scope="module")
def papalexi():
    return unify([real("papalexi_eccite_lowmoi")], task="unseen-perturbation", seed=0).adata


def test_linear_go_is_the_linear_model_on_go_vectors(papalexi):
    rep = compute_baselines(papalexi, "test")
    assert LINEAR_GO in rep.baselines and rep.baseline_definitions[LINEAR_GO] == BASELINE_DEFINITIONS[LINEAR_GO]
    assert rep.fallbacks[LINEAR_GO].n == 0 and rep.fallbacks[LINEAR_GO].to == "linear"
    preds = baseline_predictions(papalexi, "test")
    assert not np.allclose(preds[LINEAR_GO], preds["linear"])
    # recomputed by hand for one query: W fitted on the training deltas with GO vectors as P
    t = targets_for(papalexi, "test")
    from harmonycell.tools.evaluation.baselines import TrainEffects

    eff = TrainEffects(papalexi, t.contexts)
    go, why = go_embedding_of([*eff.conditions, *(q.condition for q in t.queries)])
    assert why == "" and all(q.condition in go for q in t.queries)
    rows = eff.rows(int(t.query_context[0]))
    G, W, b = fit_linear(eff.delta[rows], [go.get(eff.conditions[i]) for i in rows])
    q0 = t.queries[0].condition
    np.testing.assert_allclose(preds[LINEAR_GO][0], t.y_ctrl[0] + G @ (W @ go[q0]) + b, rtol=1e-5, atol=1e-6)


def test_an_unknown_gene_falls_back_to_linear_and_is_listed(papalexi):
    a = papalexi.copy()
    t = targets_for(a, "test")
    unknown = t.queries[0].condition
    cond = a.obs["condition_name"].astype(str)
    a.obs["condition_name"] = pd.Categorical(cond.where(cond != unknown, "LacZ"))  # a reporter, no human gene
    rep = compute_baselines(a, "test")
    fb = rep.fallbacks[LINEAR_GO]
    assert fb.n == 1 and fb.conditions == ["LacZ"] and fb.queries[0].why == NOT_KNOWN
    t = targets_for(a, "test")
    i = [q.condition for q in t.queries].index("LacZ")
    preds = baseline_predictions(a, "test")
    np.testing.assert_array_equal(preds[LINEAR_GO][i], preds["linear"][i])
    others = np.arange(len(t.queries)) != i
    assert not np.allclose(preds[LINEAR_GO][others], preds["linear"][others])


def test_omitted_with_the_reason_when_it_would_repeat_linear(tmp_path, monkeypatch, papalexi):
    # genes G000... are no human genes: nothing to read through gene knowledge
    rep = compute_baselines(make_canonical(n_perts=20, seed=3))
    assert LINEAR_GO not in rep.baselines and "knows no held-out query" in rep.omitted[LINEAR_GO]
    monkeypatch.setenv(ENV_PATH, str(tmp_path / "absent.sqlite"))
    rep = compute_baselines(papalexi, "test")
    assert LINEAR_GO not in rep.baselines and "not installed" in rep.omitted[LINEAR_GO]
