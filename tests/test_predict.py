"""`harmonycell predict` / `hc.predict`: a finished run's selected model answers perturbations
nobody measured, on a real run (synthetic data, real sandbox training)."""

from __future__ import annotations

import json
import shutil

import anndata
import numpy as np
import pytest

import harmonycell as hc
from harmonycell.prediction import PredictionRefused, Vocabulary, resolve_queries, selected_node
from harmonycell.tools.data.taskdata import load_meta
from harmonycell.tools.genes.db import GeneDB
from harmonycell.tools.record import atomic
from harmonycell.tools.record.runfolder import RunFolder

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
    assert "no ensemble" in got.uns["harmonycell"]["uncertainty"]  # no spread is claimed


@pytest.mark.parametrize("args, needle", [
    (["--perturbation", "NOTAGENE42"], "gene 'NOTAGENE42' is unknown"),
    (["--perturbation", NEVER_PERTURBED, "--context", "Liver"], "context 'Liver' was never seen"),
    (["--perturbation", NEVER_PERTURBED, "--no-refit"], f"has no input for {NEVER_PERTURBED}"),
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
