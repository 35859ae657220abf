"""`harmonycell score TASK PRED.npy --compare --json`: any prediction file judged by the code the
Judge uses (issue 26, deliverable 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cheats import merit_cheats
from harmonycell.agents.cli.main import app
from harmonycell.tools.evaluation.baselines import baseline_predictions
from harmonycell.tools.evaluation.ceiling import NOISE_CEILING
from harmonycell.tools.evaluation.compare import compare_all, usefulness
from harmonycell.tools.evaluation.metrics import SEARCH_METRIC, score
from harmonycell.tools.evaluation.baselines import compute_baselines
from harmonycell.tools.evaluation.pseudobulk import targets_for
from metrics_data import make_canonical

KEYS = {"valid", "useful", "headline", "headline_metric", "higher_is_better", "aggregate", "comparisons"}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("task")
    ad = make_canonical(n_perts=60, seed=41)
    ad.write_h5ad(d / "unified.h5ad")
    return d, ad, targets_for(ad, "test")


def _run(task_dir, pred, tmp_path, *extra):
    f = tmp_path / "pred.npy"
    np.save(f, pred.astype(np.float32))
    return CliRunner().invoke(app, ["score", str(task_dir), str(f), "--compare", *extra])


def test_oracle_and_cheats_through_the_command(task, tmp_path):
    d, ad, t = task
    res = _run(d, t.y, tmp_path, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert KEYS <= set(out) and out["valid"] and out["useful"]
    assert out["headline_metric"] == SEARCH_METRIC and out["higher_is_better"] is True
    assert out["aggregate"][SEARCH_METRIC] == pytest.approx(1.0, abs=1e-6)
    assert NOISE_CEILING in out["baselines"] and NOISE_CEILING not in {c["baseline"] for c in out["comparisons"]}
    for name, pred in merit_cheats(t, baseline_predictions(ad, "test")["train_mean"]).items():
        out = json.loads(_run(d, pred, tmp_path, "--json").stdout)
        assert out["valid"] and out["useful"] is False, name


def test_the_command_and_the_judge_agree(task, tmp_path):
    # the Judge decides from the Evaluator's compare_all and compare.usefulness: same answer
    d, ad, t = task
    pred = 0.7 * t.y + 0.3 * t.y_ctrl
    out = json.loads(_run(d, pred, tmp_path, "--json").stdout)
    rep = score(t, pred.astype(np.float32))
    base = compute_baselines(ad, "test", t)
    comps = compare_all([r.model_dump() for r in rep.per_perturbation],
                        {n: [r.model_dump() for r in rows] for n, rows in base.per_query.items()})
    useful, deciding = usefulness(comps)
    assert out["useful"] == useful
    assert {c["baseline"]: c["conclusion"] for c in out["comparisons"] if c["metric"] == SEARCH_METRIC} == \
        {b: c.conclusion for b, c in deciding.items()}


def test_a_bad_file_is_invalid_not_scored(task, tmp_path):
    d, _, t = task
    res = _run(d, t.y[:, :5], tmp_path, "--json")
    assert res.exit_code == 2
    out = json.loads(res.stdout)
    assert out["valid"] is False and out["useful"] is False and "shape" in out["headline"]
    res = _run(d, t.y, tmp_path)  # the table form
    assert res.exit_code == 0 and "BETTER THAN EVERY BASELINE" in res.stdout
