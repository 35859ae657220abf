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
