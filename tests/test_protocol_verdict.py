"""Comparisons with intervals, the two verdicts and the headline (SPEC section 7)."""

from __future__ import annotations

import numpy as np
import pytest

from harmonycell.tools.evaluation.baselines import compute_baselines
from harmonycell.tools.evaluation.compare import (
    N_BOOT,
    bootstrap_mean_ci,
    compare,
    compare_all,
    usefulness,
)
from harmonycell.tools.evaluation.metrics import HIGHER_IS_BETTER, SEARCH_METRIC, score
from harmonycell.tools.evaluation.pseudobulk import targets_for
from harmonycell.tools.report.markdown import headline_text
from harmonycell.tools.search.tree import Node, Tree, normalised_metric
from metrics_data import make_canonical


def test_interval_known_answers():
    # a constant difference has a zero-width interval at that value
    lo, hi = bootstrap_mean_ci(np.full(10, 0.25))
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    # many +1/-1 differences: mean 0, the interval is the normal one, +-1.96 sd / sqrt(n)
    d = np.array([1.0, -1.0] * 200)
    lo, hi = bootstrap_mean_ci(d)
    half = 1.96 * d.std() / np.sqrt(len(d))
    assert lo == pytest.approx(-half, abs=0.25 * half) and hi == pytest.approx(half, abs=0.25 * half)
    # seeded: the same numbers give the same interval
    assert bootstrap_mean_ci(d) == bootstrap_mean_ci(d)
    assert N_BOOT >= 1000


def test_conclusions_read_the_metric_direction():
    base = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3]
    up = [b + 0.3 + 0.01 * i for i, b in enumerate(base)]
    assert compare(up, base, "DeltaPCC", "train_mean").conclusion == "better"
    assert compare(base, up, "DeltaPCC", "train_mean").conclusion == "worse"
    # RMSE: lower is better, so the same numbers swap conclusions
    assert not HIGHER_IS_BETTER["RMSE"]
    assert compare(up, base, "RMSE", "train_mean").conclusion == "worse"
    c = compare(base, up, "RMSE", "train_mean")
    assert c.conclusion == "better" and c.mean_diff == pytest.approx(-np.mean(np.subtract(up, base)))
    # a difference that straddles 0 is not a win
    noisy = [b + (0.2 if i % 2 else -0.2) for i, b in enumerate(base)]
    c = compare(noisy, base, "DeltaPCC", "train_mean")
    assert c.ci_low < 0 < c.ci_high and c.conclusion == "indistinguishable"
    # two queries are an anecdote: no interval, no conclusion either way
    c = compare([0.9, 0.9], [0.1, 0.1], "DeltaPCC", "train_mean")
    assert c.n == 2 and c.ci_low is None and c.conclusion == "indistinguishable"
    # an undefined correlation counts as 0, never dropped
    c = compare([None, 0.5, 0.5, 0.5], [0.4, 0.4, 0.4, 0.4], "DeltaPCC", "linear")
    assert c.n == 4 and c.mean_diff == pytest.approx((-0.4 + 0.1 * 3) / 4)


def _comparisons(ad, pred):
    t = targets_for(ad, "test")
    model = score(t, pred)
    base = compute_baselines(ad, "test", t)
    comps = compare_all([r.model_dump() for r in model.per_perturbation],
                        {n: [r.model_dump() for r in rows] for n, rows in base.per_query.items()})
    return t, comps


def test_random_predictions_are_not_useful_and_the_headline_says_so():
    ad = make_canonical(n_perts=60, seed=31)
    t = targets_for(ad, "test")
    rng = np.random.default_rng(0)
    pred = t.y_ctrl + rng.normal(0, 0.5, t.y.shape)  # a model that predicts random numbers
    _, comps = _comparisons(ad, pred)
    useful, deciding = usefulness(comps)
    assert not useful
    assert set(deciding) == {"control_mean", "train_mean", "linear"}
    assert all(c.conclusion != "better" for n, c in deciding.items() if n != "control_mean")
    line = headline_text(valid=True, useful=useful, failed=[], deciding=deciding, n_queries=len(t.queries),
                         unit="genes", n_units=12, metric=SEARCH_METRIC)
    assert line.startswith("VALID, NOT BETTER THAN BASELINES")
    assert "held-out genes" in line and "train_mean: " in line and "BETTER THAN EVERY" not in line


def test_truth_is_useful_and_an_invalid_run_never_is():
    ad = make_canonical(n_perts=60, seed=32)
    t = targets_for(ad, "test")
    _, comps = _comparisons(ad, t.y.copy())  # a perfect model
    useful, deciding = usefulness(comps)
    assert useful and all(c.conclusion == "better" for c in deciding.values())
    ok = headline_text(valid=True, useful=True, failed=[], deciding=deciding, n_queries=len(t.queries),
                       unit="genes", n_units=12, metric=SEARCH_METRIC)
    assert ok.startswith("VALID, BETTER THAN EVERY BASELINE")
    bad = headline_text(valid=False, useful=False, failed=["provenance"], deciding=deciding,
                        n_queries=len(t.queries), unit="genes", n_units=12, metric=SEARCH_METRIC)
    assert bad.startswith("INVALID (provenance), NOT USEFUL")


def test_search_ranks_on_the_declared_metric_and_direction():
    assert SEARCH_METRIC == "PCC_Delta_shift_corrected" and HIGHER_IS_BETTER[SEARCH_METRIC]
    tree = Tree()
    for nid, v in (("a", 0.1), ("b", 0.4), ("c", -0.2)):
        tree.nodes[nid] = Node(id=nid, parent="root", action=nid, status="ok", reward=0.5, val_metric=v)
    assert tree.best().id == "b"
    assert normalised_metric(0.4) == pytest.approx(0.4) and normalised_metric(-0.3) == 0.0
    # a lower-is-better metric maps to a larger reward when smaller
    assert normalised_metric(0.1, "RMSE") > normalised_metric(0.5, "RMSE")


def _rows(vals, metric=SEARCH_METRIC):
    return [{"condition": f"C{i}", "context": "d|x", "metrics": {metric: v}} for i, v in enumerate(vals)]


def test_folds_pool_per_query_and_average_repeats():
    from harmonycell.tools.evaluation.crossval import FoldResult, summarise

    # two folds x two repeats; each query is tested once per repeat, the model is 0.2 better
    folds = []
    for rep in range(2):
        for k, keys in enumerate(([0, 1, 2], [3, 4, 5])):
            base = [0.1 * i for i in keys]
            model = [b + 0.2 + 0.01 * rep for b in base]
            mk = lambda vals: [{"condition": f"C{i}", "context": "d|x", "metrics": {SEARCH_METRIC: v}}
                               for i, v in zip(keys, vals)]
            folds.append(FoldResult(repeat=rep, fold=k, model_rows=mk(model),
                                    baseline_rows={"train_mean": mk(base)}))
    cv = summarise(folds, 2, 2, metrics=(SEARCH_METRIC,))
    c = cv.comparisons[0]
    assert cv.n_queries == 6 and c.n == 6  # six queries, not twelve: repeats are averaged
    assert c.mean_diff == pytest.approx(0.205) and c.conclusion == "better"
    assert cv.spread["model"][SEARCH_METRIC].n_folds == 4


def test_run_options_are_checked_before_anything_runs(tmp_path):
    from typer.testing import CliRunner

    from harmonycell.agents.cli.main import app

    f = tmp_path / "a.h5ad"
    f.write_bytes(b"")
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(f), "--repeats", "3", "--out", str(tmp_path / "runs")])
    assert res.exit_code != 0 and "--folds" in str(res.exception or res.output)
    res = runner.invoke(app, ["run", str(f), "--compare-sources", "--out", str(tmp_path / "runs")])
    assert res.exit_code != 0 and "two or more inputs" in str(res.exception or res.output)
    assert not (tmp_path / "runs").exists()
