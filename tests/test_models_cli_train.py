"""`harmonycell train TASK_DIR --action PATH --json` on a unified synthetic task."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harmonycell.agents.cli.train import app
from harmonycell.tools.data.synthetic import SimConfig, write_synthetic
from harmonycell.tools.data.unify import unify, write_unify_outputs

runner = CliRunner()


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_task")
    cfg = SimConfig(n_genes=150, n_programs=5, program_size=20, n_perturbed_genes=20, n_combos=2,
                    cells_per_condition=25, n_controls=200, seed=1)
    paths = write_synthetic(root / "raw", cfg)
    write_unify_outputs(unify(paths, "unseen-perturbation", 0), root / "task")
    return root / "task"


def test_train_json_reports_host_scores_beside_baselines(task_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HARMONYCELL_THREADS", "1")
    out = tmp_path / "noderun"
    res = runner.invoke(app, [str(task_dir), "--action", "discriminative/gated-mlp/hparams:epochs=12,width=64",
                              "--backend", "local", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["status"] == "ok" and rep["policy"] == "builtin" and rep["wall_s"] > 0
    assert rep["action"] == "discriminative/gated-mlp/hparams:epochs=12,width=64"
    assert set(rep["baselines"]) >= {"control_mean", "train_mean", "linear"}
    assert rep["metrics"]["DeltaPCC"] is not None and rep["val_metrics"]
    # carried as a search node: its own run folder, transcript and tree; the scored file is the
    # one the sandbox wrote, and the node record on the tree says what its execution did
    from harmonycell.tools.record.atomic import sha256_file
    from harmonycell.tools.record.transcript import verify
    from harmonycell.tools.search.tree import Tree

    node = Path(rep["node_dir"])
    assert node.parent == out / "nodes" and rep["run_dir"] == str(out.resolve())
    assert rep["predictions_sha256"] == sha256_file(node / "pred_test.npy")
    tree_node = Tree.load(out / "tree.json").nodes[node.name]
    assert tree_node.status == "ok" and tree_node.predictions["test"] == sha256_file(node / "pred_test.npy")
    assert tree_node.attempts == rep["attempts"] == 1 and tree_node.backend == rep["backend"]
    assert verify(out).ok
    # the table view prints the same numbers
    res2 = runner.invoke(app, [str(task_dir), "--action", "discriminative/resnet/hparams:epochs=2,width=32",
                               "--backend", "local", "--out", str(tmp_path / "n2")])
    assert res2.exit_code == 0 and "train_mean" in res2.stdout and "DeltaPCC" in res2.stdout


@pytest.mark.parametrize("action,needle", [
    ("discriminative/transformer", "resnet, gated-mlp, pathway-masked"),
    ("generative/resnet", "cvae, flow-matching"),
    ("discriminative/resnet/hparams:dropout=2", "[0, 0.9]"),
    ("discriminative/resnet/loss:huber/generative", "revert"),
    ("generative", "cvae, flow-matching"),
])
def test_bad_action_exits_2_with_choices(task_dir, tmp_path, action, needle):
    res = runner.invoke(app, [str(task_dir), "--action", action, "--backend", "local",
                              "--out", str(tmp_path / "node")])
    assert res.exit_code == 2
    assert needle in res.stderr and res.stderr.startswith("error:")
    assert not (tmp_path / "node").exists()


def test_missing_task_dir_exits_2(tmp_path):
    res = runner.invoke(app, [str(tmp_path), "--action", "discriminative/resnet", "--backend", "local"])
    assert res.exit_code == 2 and "unified.h5ad" in res.stderr


def test_train_with_llm_coder_through_stub_server(task_dir, tmp_path, monkeypatch):
    from llm_stub import StubServer, load_recording

    monkeypatch.setenv("HARMONYCELL_THREADS", "1")
    with StubServer(load_recording("coder_syntax_then_good")) as server:
        cfg = tmp_path / "llm.json"
        cfg.write_text(json.dumps({"base_url": server.base_url, "model": "recorded-model",
                                   "transport_retries": 1}))
        res = runner.invoke(app, [str(task_dir), "--action", "discriminative/resnet/hparams:epochs=3",
                                  "--backend", "local", "--json", "--llm-config", str(cfg),
                                  "--out", str(tmp_path / "node")])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["policy"] == "llm" and not rep["fell_back"] and rep["status"] == "ok"
    assert "class LowRankShift" in (Path(rep["node_dir"]) / "model.py").read_text()
    assert any("syntax error" in n for n in rep["notes"])
