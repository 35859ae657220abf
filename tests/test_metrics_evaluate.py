"""Scoring prediction files as the sandbox writes them, against the task the sandbox was given."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from harmonycell.tools.record.atomic import sha256_file
from harmonycell.tools.errors import PredictionError
from harmonycell.tools.evaluation.scoring import score_prediction_file
from harmonycell.tools.evaluation.pseudobulk import targets_for
from harmonycell.tools.data.taskdata import export_sandbox_data
from metrics_data import make_canonical


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    ad = make_canonical(n_perts=20, seed=12)
    data = tmp_path_factory.mktemp("data")
    meta = export_sandbox_data(ad, data)
    return ad, meta


def test_scores_what_the_sandbox_was_asked(task, tmp_path):
    ad, meta = task
    t = targets_for(ad, "test")
    path = tmp_path / "pred_test.npy"
    np.save(path, t.y.astype(np.float32))
    rep = score_prediction_file(ad, "test", path, meta["queries"]["test"], genes=meta["genes"])
    assert rep.predictions_sha256 == sha256_file(path)
    assert rep.aggregate["DeltaPCC"] == pytest.approx(1.0, abs=1e-6)
    assert rep.n_queries == len(meta["queries"]["test"])
    # the same file against the val queries is the wrong task
    with pytest.raises(PredictionError, match="pred_test.npy"):
        score_prediction_file(ad, "test", path, meta["queries"]["val"])


def test_rejects_pickles_garbage_and_missing(task, tmp_path):
    ad, meta = task
    p = tmp_path / "obj.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PredictionError, match="plain numeric"):
        score_prediction_file(ad, "test", p)
    g = tmp_path / "garbage.npy"
    g.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(PredictionError, match="npy"):
        score_prediction_file(ad, "test", g)
    with pytest.raises(PredictionError, match="cannot read"):
        score_prediction_file(ad, "test", tmp_path / "absent.npy")


def test_rejects_nan_rows_naming_the_file(task, tmp_path):
    ad, meta = task
    t = targets_for(ad, "test")
    pred = t.y.copy()
    pred[2] = np.nan
    path = tmp_path / "pred_test.npy"
    np.save(path, pred)
    with pytest.raises(PredictionError) as err:
        score_prediction_file(ad, "test", path, meta["queries"]["test"], targets=t)
    assert str(path) in str(err.value) and t.queries[2].condition in str(err.value)


def test_sandbox_data_cannot_reproduce_test_targets(task, tmp_path):
    # the scores mean something only if the held-out perturbed cells never left the host
    ad, _ = task
    meta = export_sandbox_data(ad, tmp_path)
    train = np.load(tmp_path / "train.npz", allow_pickle=False)
    assert train["X"].shape[0] == int((ad.obs["split"] == "train").sum())
    test_conditions = {q["condition"] for q in meta["queries"]["test"]}
    seen = {meta["train_conditions"][i] for i in np.unique(train["condition"])}
    assert not test_conditions & seen


def test_rejects_oversized_file_before_reading(task, tmp_path):
    ad, _ = task
    t = targets_for(ad, "test")
    p = tmp_path / "big.npy"
    np.save(p, np.zeros((len(t.queries) * 20, len(t.genes) * 20)))
    with pytest.raises(PredictionError, match="bytes"):
        score_prediction_file(ad, "test", p, targets=t)
