"""Baselines: each recomputed independently (plain per-group numpy) on canonical AnnData."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from harmonycell.agents.cli.evaluation import app
from harmonycell.tools.evaluation.baselines import (
    LINEAR_LAMBDA,
    baseline_predictions,
    compute_baselines,
    fit_linear,
)
from harmonycell.tools.evaluation.pseudobulk import targets_for
from metrics_data import make_canonical


def plain_train_effects(ad, context):
    """{condition: y_q(train) - y_ctrl} of one context, by boolean masks; y_ctrl is the mean of
    all control cells of the context (controls are a reference, not a split's sliver)."""
    obs = ad.obs
    ctx = (obs["dataset_id"].astype(str) + "|" + obs["cell_type"].astype(str)).to_numpy()
    tr = (obs["split"] == "train").to_numpy() & (ctx == context)
    ctrl = ad.X[(ctx == context) & obs["is_control"].to_numpy()].mean(0)
    out = {}
    for c in sorted(set(obs["condition_name"][tr & ~obs["is_control"].to_numpy()])):
        out[c] = ad.X[tr & (obs["condition_name"] == c).to_numpy()].mean(0) - ctrl
    return out


def test_control_and_train_mean_match_plain_recomputation():
    ad = make_canonical(n_perts=30, seed=7)
    t = targets_for(ad, "test")
    preds = baseline_predictions(ad, "test")
    np.testing.assert_allclose(preds["control_mean"], t.y_ctrl)
    for i, q in enumerate(t.queries):
        eff = plain_train_effects(ad, q.context)
        want = t.y_ctrl[i] + np.mean(list(eff.values()), axis=0)
        np.testing.assert_allclose(preds["train_mean"][i], want, rtol=1e-5, atol=1e-6)
    assert "additive" not in preds


def test_train_mean_shows_the_shared_shift_trap():
    rep = compute_baselines(make_canonical(n_perts=40, seed=8, shared_shift=1.0))
    tm = rep.baselines["train_mean"]
    assert tm["DeltaPCC"] > 0.5  # inflated by the shift all perturbations share ...
    # ... which the corrected metric removes: with equal cells per perturbation the average
    # perturbation IS the reference, so its shift-corrected correlation does not exist (null)
    sc = tm["PCC_Delta_shift_corrected"]
    assert sc is None or abs(sc) < 0.2
    assert rep.baselines["control_mean"]["DeltaPCC"] is None


def test_additive_for_combinations():
    ad = make_canonical(n_perts=12, combos=6, seed=9)
    t = targets_for(ad, "test")
    preds = baseline_predictions(ad, "test")
    for i, q in enumerate(t.queries):
        eff = plain_train_effects(ad, q.context)
        a, b = q.condition.split("+")
        np.testing.assert_allclose(preds["additive"][i], t.y_ctrl[i] + eff[a] + eff[b], rtol=1e-5, atol=1e-6)
    rep = compute_baselines(ad)
    assert rep.fallbacks["additive"].n == 0
    assert rep.baselines["additive"]["DeltaPCC"] > rep.baselines["train_mean"]["DeltaPCC"]


def test_linear_solves_the_ridge_normal_equations():
    rng = np.random.default_rng(0)
    D = rng.normal(size=(25, 40))  # 25 training perturbations x 40 genes
    P = rng.normal(size=(25, 7))  # their embeddings (from a PCA over all measured genes)
    G, W, b = fit_linear(D, list(P))
    assert G.shape == (40, 10) and W.shape == (10, 7)
    Y = (D - b).T
    # W minimises ||Y - G W P'||^2 + lambda ||W||-type ridge: gradient of the two-sided ridge
    # (G'G + lam I) W (P'P + lam I) = G' Y P must hold
    lhs = (G.T @ G + LINEAR_LAMBDA * np.eye(10)) @ W @ (P.T @ P + LINEAR_LAMBDA * np.eye(7))
    np.testing.assert_allclose(lhs, G.T @ Y @ P, atol=1e-8)
    np.testing.assert_allclose(G.T @ G, np.eye(10), atol=1e-10)  # principal directions
    assert fit_linear(D, [None] * 24 + [P[3]]) is None  # fewer than two embeddable perturbations


def test_linear_embedding_comes_from_all_measured_genes(tmp_path):
    """A perturbed gene outside the task's genes still has its embedding (from the PCA over all
    measured genes, stored by unify), so the linear baseline does not fall back for it."""
    from harmonycell.tools.data.genes import UNS_PERT_EMBEDDING, perturbation_embedding

    full = make_canonical(n_genes=60, n_perts=30, seed=12)
    emb = perturbation_embedding(full)
    assert set(emb["perts"]) == {f"G{i:03d}" for i in range(30)}
    task = full[:, 30:].copy()  # the perturbed genes G000..G029 are not among the task genes
    task.uns[UNS_PERT_EMBEDDING] = emb
    rep = compute_baselines(task)
    assert rep.fallbacks["linear"].n == 0
    # without the stored embedding the genes are unmeasured: every query falls back, per query
    del task.uns[UNS_PERT_EMBEDDING]
    rep = compute_baselines(task)
    fb = rep.fallbacks["linear"]
    assert fb.every_query and len(fb.queries) == rep.n_queries
    assert all("measured gene" in q.why for q in fb.queries)


def test_linear_uses_the_genes_row_and_counts_fallbacks():
    ad = make_canonical(n_perts=30, n_drugs=10, seed=10, hold_context="LineB")
    rep = compute_baselines(ad)
    t = targets_for(ad, "test")
    drugs = [q.condition for q in t.queries if q.condition.startswith("DRUG")]
    assert rep.fallbacks["linear"].n == len(drugs) == 10
    assert rep.fallbacks["linear"].conditions == sorted(drugs)
    preds = baseline_predictions(ad, "test")
    is_drug = np.array([q.condition.startswith("DRUG") for q in t.queries])
    np.testing.assert_allclose(preds["linear"][is_drug], preds["train_mean"][is_drug])
    assert not np.allclose(preds["linear"][~is_drug], preds["train_mean"][~is_drug])
    # unseen cell context: knowing how a gene behaves elsewhere beats the average shift
    assert rep.baselines["linear"]["RMSE"] < rep.baselines["train_mean"]["RMSE"]


def test_cli_json_and_table(tmp_path):
    ad = make_canonical(n_perts=12, combos=4, seed=11)
    ad.write_h5ad(tmp_path / "unified.h5ad")
    runner = CliRunner()
    res = runner.invoke(app, ["baselines", str(tmp_path), "--json", "--out", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["split"] == "test"
    assert set(payload["baselines"]) == {"control_mean", "train_mean", "linear", "additive", "noise_ceiling"}
    assert payload["test_conditions"] == sorted(payload["test_conditions"]) and payload["test_conditions"]
    assert payload["baselines"]["control_mean"]["DeltaPCC"] is None
    assert json.loads((tmp_path / "b.json").read_text()) == payload
    res = runner.invoke(app, ["baselines", str(tmp_path)])
    assert res.exit_code == 0 and "train_mean" in res.stdout and "PCC_Delta_shift_corrected" in res.stdout


def test_cli_bad_task_dir(tmp_path):
    res = CliRunner().invoke(app, ["baselines", str(tmp_path)])
    assert res.exit_code == 2
    assert "unified.h5ad" in res.output


def test_unseen_context_with_one_perturbation_has_no_shift_corrected_signal():
    # one perturbation measured in several contexts, one context held out (Kang-like): the
    # average effect is the train-mean prediction, so nothing perturbation-specific remains
    ad = make_canonical(n_perts=1, contexts=("T", "B", "NK"), hold_context="NK", seed=13)
    ad = ad[ad.obs["condition_name"].isin(["control", "G000"]).to_numpy()].copy()
    t = targets_for(ad, "test")
    assert t.pert_mean_source == ["pooled"] and t.ctrl_source == ["all"]
    rep = compute_baselines(ad)
    assert rep.baselines["train_mean"]["PCC_Delta_shift_corrected"] is None
    assert rep.baselines["train_mean"]["DeltaPCC"] > 0.5
    assert rep.baselines["train_mean"]["Discrimination_score"] is None  # a single query: no rank
    assert rep.fallbacks["linear"].n == 0  # G000 is a measured gene, seen in other contexts


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])
def test_top_left_singular_matches_svd(shape):
    from harmonycell.tools.evaluation.baselines import top_left_singular

    A = np.random.default_rng(1).normal(size=shape)
    u, s = top_left_singular(A, 5)
    U, S, _ = np.linalg.svd(A, full_matrices=False)
    np.testing.assert_allclose(s, S[:5], rtol=1e-8)
    np.testing.assert_allclose(np.abs(u.T @ U[:, :5]), np.eye(5), atol=1e-8)  # up to sign


def test_cli_score_predictions_file(tmp_path):
    from harmonycell.tools.record.atomic import sha256_file

    ad = make_canonical(n_perts=12, seed=14)
    ad.write_h5ad(tmp_path / "unified.h5ad")
    t = targets_for(ad, "test")
    np.save(tmp_path / "pred.npy", t.y.astype(np.float32))
    res = CliRunner().invoke(app, ["score", str(tmp_path), str(tmp_path / "pred.npy"), "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout)
    assert payload["aggregate"]["DeltaPCC"] == pytest.approx(1.0, abs=1e-6)
    assert payload["predictions_sha256"] == sha256_file(tmp_path / "pred.npy")
    np.save(tmp_path / "bad.npy", t.y[:-1])
    res = CliRunner().invoke(app, ["score", str(tmp_path), str(tmp_path / "bad.npy")])
    assert res.exit_code == 2 and "shape" in res.output
