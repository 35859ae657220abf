"""A network learning the residual on top of a simple model (``on:SIMPLE``), and the ensemble
of the best nodes with weights chosen on validation only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harmonycell.sandbox import harness
from harmonycell.tools.data.taskdata import export_sandbox_data
from harmonycell.tools.data.unify import unify
from harmonycell.tools.errors import InputError
from harmonycell.tools.search.actions import expansions, parse_action
from harmonycell.tools.search.codegen import generate


@pytest.fixture(scope="module")
def task_data(synthetic_dir, tmp_path_factory):
    out = unify(sorted(synthetic_dir.glob("*.h5ad")), task="unseen-perturbation", seed=0)
    d = tmp_path_factory.mktemp("task")
    export_sandbox_data(out.adata, d)
    return d


def run_node(action: str, data_dir, out_dir, **config) -> dict:
    code = generate(action, data_dir, seed=0)
    out_dir.mkdir(parents=True)
    (out_dir / "model.py").write_text(code.code)
    (out_dir / "config.json").write_text(json.dumps({**code.config, **config}))
    assert harness.main(["--data", str(data_dir), "--model", str(out_dir / "model.py"),
                         "--config", str(out_dir / "config.json"), "--out", str(out_dir)]) == 0
    return {s: np.load(out_dir / f"pred_{s}.npy") for s in ("val", "test")}


def test_on_simple_parses_only_where_it_means_something():
    p = parse_action("discriminative/resnet/hparams:width=64/on:ridge")
    assert p.base.name == "ridge" and p.resolved()["on"] == "ridge"
    assert "discriminative/resnet/on:nearest-gene" in expansions(parse_action("discriminative/resnet"))
    assert not any(k.rsplit("/", 1)[1].startswith("on:") for k in expansions(p))  # one simple model
    for bad, needle in [("generative/cvae/on:ridge", "cannot learn a residual"),
                        ("discriminative/resnet/on:resnet", "names no simple model"),
                        ("discriminative/resnet/on:lasso", "names no simple model"),
                        ("discriminative/resnet/on:ridge/on:nearest-gene", "more than one")]:
        with pytest.raises(InputError, match=needle):
            parse_action(bad)


def test_residual_network_starts_at_the_simple_model_and_learns_on_top(task_data, tmp_path):
    ridge = run_node("simple/ridge", task_data, tmp_path / "ridge")
    # no gradient step: the prediction is the simple model's, to float precision
    untrained = run_node("discriminative/resnet/on:ridge", task_data, tmp_path / "r0", epochs=0)
    for s in ("val", "test"):
        np.testing.assert_allclose(untrained[s], ridge[s], rtol=1e-5, atol=1e-5)
    trained = run_node("discriminative/resnet/hparams:width=32/on:ridge", task_data, tmp_path / "r1", epochs=3)
    assert not np.allclose(trained["val"], ridge["val"], atol=1e-4)
    log = (tmp_path / "r1" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 3


def val_targets_and_members(seed: int = 5):
    from harmonycell.tools.evaluation.baselines import baseline_predictions
    from harmonycell.tools.evaluation.pseudobulk import targets_for
    from metrics_data import make_canonical

    ad = make_canonical(n_perts=40, seed=seed)
    val = targets_for(ad, "val")
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, val.y.shape)
    train_mean = baseline_predictions(ad, "val")["train_mean"]
    test_shape = targets_for(ad, "test").y.shape
    members = [("n001", "simple/ridge", val.y + 0.1 * noise, np.full(test_shape, 1.0)),
               ("n002", "discriminative/resnet", val.y + 0.6 * rng.normal(0, 1, val.y.shape), np.full(test_shape, 2.0)),
               ("n003", "simple/nearest-gene", train_mean, np.full(test_shape, 3.0))]
    return val, members, noise


def test_ensemble_weights_come_from_validation_and_its_score_is_cross_fitted():
    from harmonycell.tools.evaluation.metrics import headline_of, score
    from harmonycell.tools.search.ensemble import build_ensemble, condition_folds, simplex_weights

    val, members, _ = val_targets_and_members()
    ens, oof, test, why = build_ensemble(members, val, seed=0)
    assert why == "" and ens.members == ["n001", "n002", "n003"]
    w = np.array(ens.weights)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0) and w.argmax() == 0
    # the test prediction is the validation-fitted weighting of the members' test predictions
    np.testing.assert_allclose(test, w @ np.array([1.0, 2.0, 3.0]), rtol=1e-5)
    # each fold scored with weights fitted on the other folds only
    folds = condition_folds([q.condition for q in val.queries], ens.folds, 0)
    P = np.stack([m[2] for m in members])
    for f in np.unique(folds):
        wf = simplex_weights(P[:, folds != f], val.y[folds != f])
        np.testing.assert_allclose(oof[folds == f], np.tensordot(wf, P[:, folds == f], axes=1), rtol=1e-4, atol=1e-5)
    assert (ens.val_metric_name, ens.val_metric) == headline_of(score(val, oof).aggregate)
    # one condition's queries (two contexts) never straddle folds
    by_cond = {}
    for q, f in zip(val.queries, folds):
        by_cond.setdefault(q.condition, set()).add(int(f))
    assert all(len(s) == 1 for s in by_cond.values())


def test_simplex_weights_find_the_exact_mixture():
    from harmonycell.tools.search.ensemble import simplex_weights

    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, (12, 30))
    e = rng.normal(0, 1, y.shape)
    w = simplex_weights(np.stack([y + e, y - 2 * e]), y)  # errors that cancel only at 2/3, 1/3
    np.testing.assert_allclose(w, [2 / 3, 1 / 3], atol=1e-4)
    w = simplex_weights(np.stack([y + e, y + 2 * e]), y)  # no cancelling: all on the better one
    np.testing.assert_allclose(w, [1.0, 0.0], atol=1e-6)


def test_no_ensemble_from_one_node():
    from harmonycell.tools.search.ensemble import build_ensemble

    val, members, _ = val_targets_and_members()
    ens, oof, test, why = build_ensemble(members[:1], val)
    assert ens is None and oof is None and "needs two" in why


def test_ensemble_of_a_search_tree_reads_checked_predictions_and_writes_its_own(tmp_path):
    from harmonycell.tools.record.atomic import sha256_file
    from harmonycell.tools.search import tree as T
    from harmonycell.tools.search.ensemble import ENSEMBLE_DIR, ensemble_of_tree

    val, members, _ = val_targets_and_members()
    tree = T.Tree()
    worst = tree.add(T.ROOT, "discriminative", status="decision")
    for (node_id, action, pv, pt), metric in zip(members, (0.9, 0.7, 0.6)):
        n = tree.add(T.ROOT, action)
        n.status, n.val_metric, n.reward = "ok", metric, metric
        d = tmp_path / n.id
        d.mkdir()
        np.save(d / "pred_val.npy", pv.astype(np.float32))
        np.save(d / "pred_test.npy", pt.astype(np.float32))
        n.predictions = {s: sha256_file(d / f"pred_{s}.npy") for s in ("val", "test")}
    also = tree.add(T.ROOT, "generative/cvae")  # a fourth, worse node: not a member
    also.status, also.val_metric, also.reward = "ok", 0.1, 0.1
    ens, why = ensemble_of_tree(tree, tmp_path, val)
    assert why == "" and ens.actions == [m[1] for m in members] and worst.id not in ens.members
    out = tmp_path / ENSEMBLE_DIR
    assert np.load(out / "pred_test.npy").shape == members[0][3].shape
    assert json.loads((out / "ensemble.json").read_text())["weights"] == ens.weights
    np.save(tmp_path / ens.members[1] / "pred_val.npy", members[2][2].astype(np.float32))  # swapped
    with pytest.raises(InputError, match="not the file the sandbox wrote"):
        ensemble_of_tree(tree, tmp_path, val)


def test_folds_keep_a_held_out_context_together_where_the_task_holds_out_contexts():
    from harmonycell.tools.search.ensemble import build_ensemble, condition_folds

    val, members, _ = val_targets_and_members()
    contexts = sorted({q.context for q in val.queries})
    assert len(contexts) >= 2
    ens, oof, _, why = build_ensemble(members, val, seed=0, unit="context")
    assert why == "" and ens.fold_unit == "context" and ens.folds == min(5, len(contexts))
    folds = condition_folds([q.context for q in val.queries], ens.folds, 0)
    by_ctx = {}
    for q, f in zip(val.queries, folds):
        by_ctx.setdefault(q.context, set()).add(int(f))
    assert all(len(s) == 1 for s in by_ctx.values())
    # two contexts make two folds: every fold's weights are fitted on the other context alone
    assert ens.folds == 2 and not np.allclose(oof, build_ensemble(members, val, seed=0)[1])
