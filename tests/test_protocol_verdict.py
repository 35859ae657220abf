"""Comparisons with intervals, the two verdicts and the headline (SPEC section 7)."""

from __future__ import annotations

import numpy as np
import pytest

from harmonycell.tools.evaluation.baselines import compute_baselines
from harmonycell.tools.evaluation.compare import (
    ALPHA,
    compare,
    compare_all,
    compare_diffs,
    holm,
    min_p,
    usefulness,
)
from harmonycell.tools.evaluation.metrics import FALLBACK_METRIC, HIGHER_IS_BETTER, SEARCH_METRIC, score
from harmonycell.tools.evaluation.pseudobulk import targets_for
from harmonycell.tools.report.markdown import headline_text
from harmonycell.tools.search.tree import Node, Tree, normalised_metric
from metrics_data import make_canonical


def test_sign_flip_known_answers():
    # n = 5, every difference positive: p = 2 / 2^5 = 0.0625 > 0.05, so "too few units", never
    # "better" -- however large the differences (three of +1e-6 used to be "better")
    for n in (3, 5):
        c = compare_diffs(np.full(n, 1e-6), "DeltaPCC", "train_mean")
        assert c.p_value == pytest.approx(min_p(n)) and c.conclusion == "too few units"
    c = compare_diffs(np.full(6, 0.3), "DeltaPCC", "train_mean")
    assert c.p_value == pytest.approx(2 / 64) and c.conclusion == "better"
    # exact enumeration: 8 pairs, one negative of the same size: 2 * (1 + 8) / 256
    d = np.array([1.0] * 7 + [-1.0])
    assert compare_diffs(d, "DeltaPCC", "x").p_value == pytest.approx(2 * 9 / 256)
    # the interval is centred on the mean and seeded
    c = compare_diffs(np.array([0.1, 0.3, 0.2, 0.4, 0.25, 0.15, 0.35]), "DeltaPCC", "x")
    assert c.ci_low < c.mean_diff < c.ci_high
    assert c == compare_diffs(np.array([0.1, 0.3, 0.2, 0.4, 0.25, 0.15, 0.35]), "DeltaPCC", "x")
    # identical predictions: no difference, p = 1
    assert compare_diffs(np.zeros(30), "DeltaPCC", "x").conclusion == "indistinguishable"


def test_holm_known_answers():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    # with three baselines at once, 6 units cannot reach 0.05 even when all agree
    assert 3 * min_p(6) > ALPHA and 3 * min_p(7) <= ALPHA


def test_conclusions_read_the_metric_direction():
    base = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1, 0.2]
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
    # two queries are an anecdote: no conclusion either way
    c = compare([0.9, 0.9], [0.1, 0.1], "DeltaPCC", "train_mean")
    assert c.n == 2 and c.conclusion == "too few units"
    # an undefined value is not applicable: dropped, never counted as 0
    c = compare([None] + [0.5] * 7, [0.4] * 8, "DeltaPCC", "linear")
    assert c.n == 7 and c.n_undefined == 1 and c.mean_diff == pytest.approx(0.1)
    c = compare([0.5] * 8, [None] * 8, "DeltaPCC", "control_mean")
    assert c.n == 0 and c.mean_diff is None and c.conclusion == "not applicable"


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
    # control_mean's headline is defined (chance), so it is compared like every other baseline
    assert set(deciding) == {"control_mean", "train_mean", "linear"}
    assert all(c.conclusion != "better" for c in deciding.values())
    line = headline_text(valid=True, useful=useful, failed=[], deciding=deciding, n_queries=len(t.queries),
                         unit="genes", n_units=12, metric=SEARCH_METRIC)
    assert line.startswith("VALID, NOT BETTER THAN BASELINES")
    assert "held-out genes" in line and "train_mean: " in line and "control_mean: " in line
    assert "BETTER THAN EVERY" not in line


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


def test_undefined_everywhere_never_decides_and_the_fallback_does():
    rows = lambda vals, m: [{"condition": f"C{i}", "context": "d|x", "metrics": m(v)} for i, v in enumerate(vals)]
    # the headline is undefined for all (a single held-out query per pool): the fallback decides
    model = rows([0.9] * 8, lambda v: {SEARCH_METRIC: None, FALLBACK_METRIC: v})
    base = {"control_mean": rows([0] * 8, lambda v: {SEARCH_METRIC: None, FALLBACK_METRIC: None}),
            "train_mean": rows([0.5 + 0.01 * i for i in range(8)],
                               lambda v: {SEARCH_METRIC: None, FALLBACK_METRIC: v})}
    comps = compare_all(model, base, metrics=(SEARCH_METRIC, FALLBACK_METRIC))
    useful, deciding = usefulness(comps)
    assert set(deciding) == {"train_mean"} and deciding["train_mean"].metric == FALLBACK_METRIC
    assert useful  # control_mean is not applicable, not a 0 the model trivially beats
    # nothing applies at all: never useful
    none = rows([0] * 8, lambda v: {SEARCH_METRIC: None, FALLBACK_METRIC: None})
    assert usefulness(compare_all(none, {"control_mean": none},
                                  metrics=(SEARCH_METRIC, FALLBACK_METRIC))) == (False, {})


def test_search_ranks_on_the_declared_metric_and_direction():
    assert SEARCH_METRIC == "Discrimination_score" and HIGHER_IS_BETTER[SEARCH_METRIC]
    tree = Tree()
    for nid, v in (("a", 0.6), ("b", 0.9), ("c", 0.4)):
        tree.nodes[nid] = Node(id=nid, parent="root", action=nid, status="ok", reward=0.5, val_metric=v)
    assert tree.best().id == "b"
    assert normalised_metric(0.9) == pytest.approx(0.9) and normalised_metric(0.5) == 0.5
    # a lower-is-better metric maps to a larger reward when smaller
    assert normalised_metric(0.1, "RMSE") > normalised_metric(0.5, "RMSE")


def _rows(vals, metric=SEARCH_METRIC):
    return [{"condition": f"C{i}", "context": "d|x", "metrics": {metric: v}} for i, v in enumerate(vals)]


def test_folds_pool_per_query_and_average_repeats():
    from harmonycell.tools.evaluation.crossval import FoldResult, summarise

    # two folds x two repeats; each query is tested once per repeat, the model is 0.2 better;
    # query C3 is tested in both folds of each repeat (a pair held out twice): one unit still
    folds = []
    for rep in range(2):
        for k, keys in enumerate(([0, 1, 2, 3], [3, 4, 5, 6])):
            base = [0.1 * i for i in keys]
            model = [b + 0.2 + 0.01 * rep for b in base]
            mk = lambda vals: [{"condition": f"C{i}", "context": "d|x", "metrics": {SEARCH_METRIC: v}}
                               for i, v in zip(keys, vals)]
            folds.append(FoldResult(repeat=rep, fold=k, model_rows=mk(model),
                                    baseline_rows={"train_mean": mk(base)},
                                    ceiling={SEARCH_METRIC: 0.9 + 0.02 * k}))
    cv = summarise(folds, 2, 2, metrics=(SEARCH_METRIC,))
    c = cv.comparisons[0]
    assert cv.n_queries == 7 and c.n == 7  # seven queries, not sixteen instances
    assert c.mean_diff == pytest.approx(0.205) and c.conclusion == "better"
    assert cv.spread["model"][SEARCH_METRIC].n_folds == 4
    # the noise ceiling is shown beside the predictors, over the folds, and never compared
    assert cv.spread["noise_ceiling"][SEARCH_METRIC].mean == pytest.approx(0.91)
    assert [c.baseline for c in cv.comparisons] == ["train_mean"]


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


def test_the_headline_says_when_a_split_cannot_decide_and_when_the_data_hold_little_signal():
    """The Judge's line (tools.report.markdown.headline_text with verdict.decidability): a held-out
    split too small to conclude names the --folds that would; a noise ceiling near chance says the
    data hold little predictable signal instead of only 'not better'."""
    from harmonycell.tools.evaluation.metrics import FALLBACK_METRIC, SEARCH_METRIC
    from harmonycell.tools.evaluation.verdict import decidability
    from harmonycell.tools.report.markdown import headline_text

    small = {"train_mean": compare([0.9], [0.1], FALLBACK_METRIC, "train_mean")}  # Kang: one held-out cell type
    assert small["train_mean"].conclusion == "too few units"
    notes = decidability(FALLBACK_METRIC, small, {FALLBACK_METRIC: 0.99}, 1)
    line = headline_text(valid=True, useful=False, failed=[], deciding=small, n_queries=1, unit="cell type",
                         n_units=1, metric=FALLBACK_METRIC, notes=notes)
    assert "this split cannot decide (1 held-out queries)" in line and "--folds 5" in line
    assert "noise ceiling 0.990" in line
    many = {"train_mean": compare([0.52] * 12, [0.5] * 12, SEARCH_METRIC, "train_mean")}
    flat = decidability(SEARCH_METRIC, many, {SEARCH_METRIC: 0.55}, 12)
    assert flat == ["the noise ceiling is itself near chance (0.550 vs 0.5): the data hold little predictable signal"]
    assert decidability(SEARCH_METRIC, many, {SEARCH_METRIC: 0.86}, 12) == ["noise ceiling 0.860"]
