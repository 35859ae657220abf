"""`harmonycell predict` / `hc.predict`: a finished run's selected model answers perturbations
nobody measured, on a real run (synthetic data, real sandbox training)."""

from __future__ import annotations

import json
import shutil

import anndata
import numpy as np
import pytest

import harmonycell as hc
from harmonycell.cells import SAMPLED, SHIFTED, draw_controls, generative
from harmonycell.prediction import (Fit, PredictionRefused, Query, Vocabulary, _backend, resolve_queries,
                                    sandbox_predict, selected_node)
from harmonycell.sandbox.training import run_training
from harmonycell.tools.data.taskdata import load_meta
from harmonycell.tools.genes.db import GeneDB
from harmonycell.tools.record import atomic
from harmonycell.tools.record.runfolder import RunFolder
from harmonycell.tools.schema import context_labels
from harmonycell.tools.search import codegen

from predict_support import cli, predict_run, records  # noqa: F401  (the fixture)

NEVER_PERTURBED = "SG0001"  # measured by the synthetic data, perturbed in no cell


def test_no_refit_gives_exactly_the_nodes_own_test_prediction(predict_run):
    run = RunFolder(predict_run)
    node = selected_node(run)
    meta = load_meta(run.sandbox_data)
    own = np.load(run.node_dir(node) / "pred_test.npy")
    for q, row in list(zip(meta["queries"]["test"], own))[:3]:
        pred = hc.predict(predict_run, q["condition"], contexts=q["context"], refit=False)
        assert pred.n_obs == 1 and pred.obs["predicted"].all()
        assert np.array_equal(pred.X[0], row)  # exactly, not approximately
        assert pred.uns["harmonycell"]["model"]["node"] == node


def test_no_refit_re_executes_the_node_for_a_query_it_was_not_asked(predict_run):
    run = RunFolder(predict_run)
    meta = load_meta(run.sandbox_data)
    held = {(q["condition"], q["context"]) for s in ("val", "test") for q in meta["queries"][s]}
    gene = next(c for c in meta["train_conditions"] if "+" not in c and c != "control")
    pred = hc.predict(predict_run, gene, refit=False)
    assert set(pred.obs["context"]) == set(meta["contexts"])
    rows = [(c, k) for c, k in zip(pred.obs["condition_name"], pred.obs["context"])]
    assert all(r not in held for r in rows)
    assert set(pred.obs["source"]) == {"the node as trained (re-executed)"}
    assert np.isfinite(pred.X).all()
    fit = json.loads((predict_run / "predict" / f"{selected_node(run)}-as-trained" / "fit.json").read_text())
    assert fit["refit"] is False


def test_refit_predicts_a_gene_never_perturbed_and_is_kept_with_the_run(predict_run):
    run = RunFolder(predict_run)
    adata = anndata.read_h5ad(run.unified)
    assert NEVER_PERTURBED not in set(adata.obs["condition_name"].astype(str))
    assert NEVER_PERTURBED in set(adata.var["gene_symbol"].astype(str))
    pred = hc.predict(predict_run, NEVER_PERTURBED)
    info = pred.uns["harmonycell"]
    assert info["model"]["refit"] and info["notice"] == hc.NOTICE
    assert pred.n_obs == 2 and set(pred.obs["condition_name"]) == {NEVER_PERTURBED}
    assert list(pred.var_names) == list(adata.var_names)
    assert np.isfinite(pred.X).all() and np.abs(pred.layers["delta"]).max() > 0
    # refitted on every labelled unit: the test split's cells are in its training data
    fit_dir = predict_run / "predict" / info["model"]["fit"]
    train = np.load(fit_dir / "data" / "train.npz")
    assert len(train["X"]) == adata.n_obs and set(adata.obs["split"]) == {"train", "val", "test"}
    assert atomic.sha256_file(fit_dir / "fit" / "model.pt") == info["model"]["model_sha256"]
    # a second question is answered by the same kept fit
    again = hc.predict(predict_run, [NEVER_PERTURBED, "SG0003"])
    assert again.uns["harmonycell"]["model"]["model_sha256"] == info["model"]["model_sha256"]
    assert np.array_equal(again[again.obs["condition_name"] == NEVER_PERTURBED].X, pred.X)
    calls = [r for r in records(predict_run) if r["type"] == "predict"]
    assert calls[-1]["content"]["result"]["fit_reused"] is True
    assert sum(r["type"] == "predict.refit" for r in records(predict_run)) == 1


def test_a_gene_outside_the_kept_fit_refits_once_with_every_earlier_input(predict_run):
    first = hc.predict(predict_run, NEVER_PERTURBED, contexts="LineA").uns["harmonycell"]["model"]["fit"]
    wider = hc.predict(predict_run, "JAK2", contexts="LineA")  # in gene knowledge, not in the data
    assert wider.obs["condition_name"].tolist() == ["JAK2"] and np.isfinite(wider.X).all()
    name = wider.uns["harmonycell"]["model"]["fit"]
    assert name != first
    inputs = json.loads((predict_run / "predict" / name / "fit.json").read_text())["inputs"]
    earlier = json.loads((predict_run / "predict" / first / "fit.json").read_text())["inputs"]
    assert set(earlier) < set(inputs) and "JAK2" in inputs
    # from now on both genes are answered by the wider fit, without another refit
    n_refits = sum(r["type"] == "predict.refit" for r in records(predict_run))
    both = hc.predict(predict_run, [NEVER_PERTURBED, "JAK2"], contexts="LineA")
    assert both.uns["harmonycell"]["model"]["fit"] == name
    assert sum(r["type"] == "predict.refit" for r in records(predict_run)) == n_refits


def test_every_call_is_on_the_record_and_replay_verify_covers_the_fits(predict_run, tmp_path):
    hc.predict(predict_run, NEVER_PERTURBED, contexts="LineA")
    with pytest.raises(PredictionRefused):
        hc.predict(predict_run, "NOTAGENE42")
    recs = records(predict_run)
    assert recs[-2]["type"] == "predict" and recs[-1]["type"] == "prediction_refused"
    assert "NOTAGENE42" in recs[-1]["content"]["reason"]
    refit = next(r for r in recs if r["type"] == "predict.refit")
    assert any(a["path"].endswith("model.pt") for a in refit["artifacts"])
    res = cli("replay", predict_run, "--verify")
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr
    # questions asked after the run are not decisions a re-execution must reproduce
    res = cli("replay", predict_run, "--rerun", "--out", tmp_path / "reruns")
    assert res.returncode == 0 and "SAME" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
    copy = tmp_path / "run"
    shutil.copytree(predict_run, copy)
    pt = next((copy / "predict").glob("*-refit-*/fit/model.pt"))
    pt.write_bytes(pt.read_bytes() + b"x")
    res = cli("replay", copy, "--verify")
    assert res.returncode == 1 and "model.pt" in res.stdout, res.stdout


def test_cli_writes_the_anndata_and_says_it_is_a_prediction(predict_run, tmp_path):
    out = tmp_path / "pred.h5ad"
    res = cli("predict", predict_run, "--perturbation", NEVER_PERTURBED, "--context", "LineB", "--out", out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PREDICTED by a model, not measured" in res.stdout and "refitted on every labelled unit" in res.stdout
    got = anndata.read_h5ad(out)
    assert got.obs["predicted"].all() and list(got.obs["cell_type"]) == ["LineB"]
    assert got.uns["harmonycell"]["verdict"]["headline"]
    # ridge, closed form: the default ensemble of 5 bootstrap refits gives the spread
    assert got.uns["harmonycell"]["spread"]["members"] == 5 and got.layers["spread"].shape == got.shape
    assert "5 bootstrap refits" in res.stdout


@pytest.mark.parametrize("args, needle", [
    (["--perturbation", "NOTAGENE42"], "gene 'NOTAGENE42' is unknown"),
    (["--perturbation", NEVER_PERTURBED, "--context", "Liver"], "context 'Liver' was never seen"),
    (["--perturbation", NEVER_PERTURBED, "--no-refit"], f"has no input for {NEVER_PERTURBED}"),
    (["--perturbation", NEVER_PERTURBED, "--cells", "0"], "--cells: --cells 0 asks for no cells"),
    (["--perturbation", NEVER_PERTURBED, "--members", "0"], "--members 0 is not a positive whole number"),
    (["--perturbation", "SG0003", "--members", "3", "--no-refit"], "--members needs a refit"),
])
def test_refusals_are_one_line_and_exit_2(predict_run, args, needle):
    res = cli("predict", predict_run, *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_from_file_reads_one_perturbation_per_line(predict_run, tmp_path):
    f = tmp_path / "genes.txt"
    f.write_text("# asked by a person\nSG0003\n\nSG0001  # never perturbed\n")
    res = cli("predict", predict_run, "--from", f, "--context", "LineA", "--out", tmp_path / "p.h5ad")
    assert res.returncode == 0, res.stderr
    assert sorted(anndata.read_h5ad(tmp_path / "p.h5ad").obs["requested"]) == ["SG0001", "SG0003"]


def test_aliases_are_resolved_and_said(predict_run):
    adata = anndata.read_h5ad(RunFolder(predict_run).unified)
    vocab = Vocabulary.of(adata, "unseen-perturbation")
    with GeneDB() as db:
        (q,) = resolve_queries(["P53"], ["LineA"], vocab, db)
    assert q.condition == "TP53" and q.notes == ("P53 read as TP53 (alias in gene knowledge)",)


def test_a_combination_is_refused_where_the_task_taught_only_singles(predict_run):
    adata = anndata.read_h5ad(RunFolder(predict_run).unified)
    singles = adata[~adata.obs["condition_name"].astype(str).str.contains("+", regex=False)].copy()
    vocab = Vocabulary.of(singles, "unseen-perturbation")
    with pytest.raises(PredictionRefused, match="combination.*single perturbations only"):
        resolve_queries(["SG0003+SG0011"], None, vocab, None)
    # the unseen-combination task is taught to answer them
    assert resolve_queries(["SG0003+SG0011"], ["LineA"], Vocabulary.of(singles, "unseen-combination"), None)


def test_a_run_whose_perturbations_are_not_genes_refuses_a_gene(predict_run):
    adata = anndata.read_h5ad(RunFolder(predict_run).unified)
    adata.obs["pert_type"] = adata.obs["pert_type"].astype(str).replace("crispr", "drug")
    vocab = Vocabulary.of(adata, "unseen-perturbation")
    with GeneDB() as db, pytest.raises(PredictionRefused, match="not genes"):
        resolve_queries(["JAK2"], None, vocab, db)


def _types(run_dir, kind):
    return sum(r["type"] == kind for r in records(run_dir))


def test_the_spread_is_over_bootstrap_refits_kept_with_the_run_and_the_mean_is_the_full_refit(predict_run):
    with_members = hc.predict(predict_run, "SG0003", contexts="LineA", members=3)
    info = with_members.uns["harmonycell"]["spread"]
    assert info["members"] == 3 and list(info["seeds"]) == [0, 1, 2] and info["layer"] == "spread"
    assert "3 bootstrap refits" in with_members.uns["harmonycell"]["uncertainty"]
    # the mean is the refit on every unit: the same with members as without
    alone = hc.predict(predict_run, "SG0003", contexts="LineA", members=1)
    assert np.array_equal(with_members.X, alone.X)
    assert "spread" not in alone.layers and "spread" not in alone.uns["harmonycell"]
    assert alone.uns["harmonycell"]["uncertainty"].startswith("none: --members 1")
    # positive where the perturbation moves the genes: bootstraps of a closed-form model disagree
    spread, delta = with_members.layers["spread"][0], with_members.layers["delta"][0]
    moved = np.argsort(-np.abs(delta))[:25]
    assert np.isfinite(spread).all() and (spread[moved] > 0).all()
    # each member trained on a resample of the units with replacement, every control cell kept
    full = predict_run / "predict" / with_members.uns["harmonycell"]["model"]["fit"]
    adata = anndata.read_h5ad(RunFolder(predict_run).unified)
    cond = adata.obs["condition_name"].astype(str)
    n_cells = cond[~adata.obs["is_control"].astype(bool)].value_counts()
    for seed, name, sha in zip(info["seeds"], info["member_fits"], info["member_model_sha256"]):
        member = full / "members" / f"seed{seed}"
        rec = json.loads((member / "fit.json").read_text())
        assert rec["fit"] == name and rec["model_sha256"] == sha == atomic.sha256_file(member / "fit" / "model.pt")
        assert len(rec["units_drawn"]) == len(n_cells) > len(set(rec["units_drawn"]))  # repeats: with replacement
        train = np.load(member / "data" / "train.npz")
        assert (~train["is_control"]).sum() == sum(n_cells[u] for u in rec["units_drawn"])
        controls = [atomic.sha256_file(f / "data" / "controls.npz") for f in (member, full)]
        assert controls[0] == controls[1]
        assert any(r["type"] == "predict.member" and r["content"]["result"]["fit"] == name
                   and any(a["sha256"] == sha for a in r["artifacts"]) for r in records(predict_run))
    # a later call reuses the kept members: no sandbox fit at all, and it says so
    members, refits = _types(predict_run, "predict.member"), _types(predict_run, "predict.refit")
    again = hc.predict(predict_run, "SG0003", contexts="LineA", members=3)
    assert _types(predict_run, "predict.member") == members and _types(predict_run, "predict.refit") == refits
    assert [r for r in records(predict_run) if r["type"] == "predict"][-1]["content"]["result"]["members_reused"] == 3
    assert np.array_equal(again.layers["spread"], with_members.layers["spread"])


def test_no_refit_has_no_spread_and_says_why(predict_run):
    meta = load_meta(RunFolder(predict_run).sandbox_data)
    q = meta["queries"]["test"][0]
    pred = hc.predict(predict_run, q["condition"], contexts=q["context"], refit=False)
    assert "spread" not in pred.layers
    assert pred.uns["harmonycell"]["uncertainty"].startswith("none: --no-refit answers with the node as trained")


def test_a_tampered_member_is_caught_by_replay_and_fitted_again(predict_run, tmp_path):
    fit = hc.predict(predict_run, NEVER_PERTURBED, contexts="LineA", members=2).uns["harmonycell"]["model"]["fit"]
    copy = tmp_path / "run"
    shutil.copytree(predict_run, copy)
    pt = copy / "predict" / fit / "members" / "seed1" / "fit" / "model.pt"
    pt.write_bytes(pt.read_bytes() + b"x")
    res = cli("replay", copy, "--verify")
    assert res.returncode == 1 and "members/seed1/fit/model.pt" in res.stdout, res.stdout
    n = _types(copy, "predict.member")
    pred = hc.predict(copy, NEVER_PERTURBED, contexts="LineA", members=2)
    assert _types(copy, "predict.member") == n + 1  # the altered member alone, made again
    assert [r for r in records(copy) if r["type"] == "predict"][-1]["content"]["result"]["members_reused"] == 1
    assert "spread" in pred.layers


def test_cells_are_drawn_control_cells_shifted_by_the_predicted_delta(predict_run, tmp_path):
    out = tmp_path / "pred.h5ad"
    res = cli("predict", predict_run, "-p", NEVER_PERTURBED, "-p", "SG0003", "--context", "LineB", "--out", out,
              "--cells", "30", "--members", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    means, cells = anndata.read_h5ad(out), anndata.read_h5ad(tmp_path / "pred.cells.h5ad")
    assert "not generative" in res.stdout and cells.n_obs == 60 and list(cells.var_names) == list(means.var_names)
    assert cells.obs["predicted"].all() and set(cells.obs["sampled_from"]) == {SHIFTED}
    assert "not generative" in cells.uns["harmonycell"]["cells"]["what"]
    adata = anndata.read_h5ad(RunFolder(predict_run).unified)
    rows = adata.obs_names.get_indexer(cells.obs["control_cell"])
    src = adata.obs.iloc[rows]
    assert src["is_control"].astype(bool).all() and set(context_labels(src)) == set(means.obs["context"])
    delta = means.layers["delta"][means.obs_names.get_indexer(cells.obs["query"])]
    X = np.asarray(adata.X[rows].todense() if hasattr(adata.X, "todense") else adata.X[rows])
    assert np.allclose(cells.X, np.clip(X + delta, 0, None), atol=1e-6)
    # the same control cells for both perturbations: they differ by the predicted delta alone
    by = cells.obs.groupby("condition_name", observed=True)["control_cell"].apply(list)
    assert by[NEVER_PERTURBED] == by["SG0003"]


def test_a_generative_model_samples_its_cells(predict_run, tmp_path):
    """The selected model of the fixture's run is closed-form; a cvae trained in the sandbox on the
    same data shows the generative path: each cell is a draw of the model, not a shifted mean."""
    assert generative("generative/cvae") and not generative("simple/ridge")
    run = RunFolder(predict_run)
    mc = codegen.generate("generative/cvae/hparams:width=32,latent_dim=4")
    fit = Fit("cvae", tmp_path / "cvae", run.sandbox_data, refit=False, reused=False)
    res = run_training(_backend(run), run.sandbox_data, mc.code, {**mc.config, "epochs": 2, "save_model": True},
                       fit.model_dir, timeout_s=300)
    assert res.ok, res.stderr_tail
    adata = anndata.read_h5ad(run.unified)
    meta = load_meta(run.sandbox_data)
    queries = [Query("SG0003", "SG0003", meta["contexts"][0])]
    draws = draw_controls(adata, [q.context for q in queries], 6, seed=0)
    draws[0, :3] = draws[0, 0]  # one control cell three times: three different draws of the model
    got = sandbox_predict(run, [fit], queries, tmp_path / "call", draws, cells_seed=0)
    assert got.cells.shape == (1, 6, adata.n_vars) and np.isfinite(got.cells).all()
    assert not np.allclose(got.cells[0, 0], got.cells[0, 1]) and not np.allclose(got.cells[0, 1], got.cells[0, 2])
    again = sandbox_predict(run, [fit], queries, tmp_path / "again", draws, cells_seed=0)
    assert np.array_equal(again.cells, got.cells) and np.array_equal(again.pred, got.pred)  # seeded
    assert SAMPLED.startswith("generative model")
