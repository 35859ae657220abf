"""Seeded cheats against each isolating backend (docker and bubblewrap), SPEC section 8.

A run folder is laid out as a real run's (unify/unified.h5ad with every target, data/sandbox,
nodes/), and model files written as an adversary would run in it through the real harness:
(a) random predictions, (b) reading the held-out targets by every path, (c) replacing the
harness's prediction writer, (d) the network, (e) writing outside the node folder, (f) finding
validation or test targets among what the sandbox sees. Each either fails inside the sandbox or
is scored by the host as no better than the baselines.

Where an engine or bubblewrap is missing these skip with the reason; under CI
(CI=true or HARMONYCELL_REQUIRE_DOCKER=1) they fail instead: CI must exercise both walls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cheats import PROBE, RANDOM, WRITER
from harmonycell.sandbox.training import run_training
from harmonycell.tools.errors import SandboxError
from harmonycell.tools.record.atomic import sha256_file

CONFIG = {"seed": 0, "epochs": 2, "batch_size": 32, "lr": 1e-2, "patience": 5}
REQUIRED = os.environ.get("CI") == "true" or os.environ.get("HARMONYCELL_REQUIRE_DOCKER") == "1"


def _backend(name: str):
    from harmonycell.sandbox.backends import get_backend

    try:
        return get_backend(name)
    except SandboxError as why:
        if REQUIRED:
            pytest.fail(f"CI must run the seeded cheats on {name}: {why.one_line()}")
        pytest.skip(f"no {name} sandbox here: {why.one_line()}")


@pytest.fixture(scope="module", params=[pytest.param("docker", marks=pytest.mark.docker), "bwrap"])
def backend(request):
    return _backend(request.param)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """unify/unified.h5ad (all targets), data/sandbox (what the sandbox may see), nodes/."""
    from metrics_data import make_canonical

    from harmonycell.tools.data.taskdata import export_sandbox_data

    root = tmp_path_factory.mktemp("run")
    adata = make_canonical(n_genes=40, n_perts=20, cells_per=15, n_ctrl=120)
    (root / "unify").mkdir()
    adata.write_h5ad(root / "unify" / "unified.h5ad")
    export_sandbox_data(adata, root / "data" / "sandbox")
    (root / "nodes").mkdir()
    return root, adata


def run_cheat(backend, run_folder, name: str, code: str):
    root, _ = run_folder
    node = root / "nodes" / f"{backend.name}-{name}"
    res = run_training(backend, root / "data" / "sandbox", code, CONFIG, node, timeout_s=600)
    return res, node


def host_scores(adata, root: Path, node: Path) -> tuple[dict, dict, bool]:
    """The host's test metrics of the node's predictions, the baselines', and the Judge's
    ``useful``: better than every baseline on the search metric, paired per query, with the
    interval excluding 0 (the same comparisons the Evaluator hands the Judge)."""
    from harmonycell.tools.data.taskdata import load_meta, queries_from_meta
    from harmonycell.tools.evaluation.baselines import compute_baselines
    from harmonycell.tools.evaluation.compare import compare_all, usefulness
    from harmonycell.tools.evaluation.scoring import score_prediction_file

    meta = load_meta(root / "data" / "sandbox")
    rep = score_prediction_file(adata, "test", node / "pred_test.npy", queries_from_meta(meta, "test"),
                                genes=meta["genes"])
    base = compute_baselines(adata, "test")
    comparisons = compare_all([r.model_dump() for r in rep.per_perturbation],
                              {n: [r.model_dump() for r in rows] for n, rows in base.per_query.items()})
    assert comparisons, "no comparison was made: the test could not tell success from failure"
    useful, _ = usefulness(comparisons)
    return dict(rep.aggregate), base.baselines, useful


def test_b_d_e_f_every_way_out_fails_inside_the_sandbox(backend, run_folder, tmp_path):
    root, _ = run_folder
    unified = root / "unify" / "unified.h5ad"
    before = {p: sha256_file(p) for p in [unified, *sorted((root / "data" / "sandbox").iterdir())]}
    code = PROBE.format(unified=str(unified), run=str(root))
    res, node = run_cheat(backend, run_folder, "probe", code)
    assert res.ok and res.isolated, res.stderr_tail
    attempts = json.loads((node / "cheat_attempts.json").read_text())
    arrays = attempts.pop("sandbox data arrays")
    leaked = {k: v for k, v in attempts.items() if v == "SUCCEEDED"}
    assert not leaked, f"{backend.name}: {leaked}"
    assert len(attempts) >= 20  # every attempt ran and answered
    # nothing of the host changed, and nothing appeared beside the node folder
    assert {p: sha256_file(p) for p in before} == before
    assert not (root / "cheat.txt").exists() and not Path("/usr/cheat.txt").exists()
    # (f) what the sandbox can see holds no validation or test cell's expression
    assert {a.split(":")[0] for a in arrays} == {"train.npz", "controls.npz", "queries.npz"}
    assert_no_heldout_targets(run_folder)


def assert_no_heldout_targets(run_folder):
    root, adata = run_folder
    from harmonycell.tools.data.taskdata import dense

    obs = adata.obs
    held = (obs["split"].astype(str) != "train").to_numpy() & ~obs["is_control"].astype(bool).to_numpy()
    held_rows = {r.tobytes() for r in dense(adata.X[held])}
    assert held_rows
    data = root / "data" / "sandbox"
    for f in sorted(data.glob("*.npz")):
        with np.load(f) as z:
            for k in z.files:
                a = z[k]
                if a.ndim == 2 and a.shape[1] == adata.n_vars and a.dtype == np.float32:
                    assert not held_rows & {r.tobytes() for r in a}, f"{f.name}:{k} holds held-out cells"


def test_a_random_predictions_are_scored_as_no_better_than_baselines(backend, run_folder):
    root, adata = run_folder
    res, node = run_cheat(backend, run_folder, "random", RANDOM)
    assert res.ok, res.stderr_tail
    metrics, baselines, useful = host_scores(adata, root, node)
    assert metrics["RMSE"] > baselines["control_mean"]["RMSE"]
    assert metrics["DeltaPCC"] < baselines["train_mean"]["DeltaPCC"]
    assert useful is False


@pytest.mark.parametrize("mode", ["copied controls", "train mean"])
def test_c_a_replaced_prediction_writer_is_scored_as_no_better_than_baselines(backend, run_folder, mode):
    root, adata = run_folder
    res, node = run_cheat(backend, run_folder, mode.replace(" ", "-"), WRITER.format(mode=mode))
    assert res.ok, res.stderr_tail
    metrics, baselines, useful = host_scores(adata, root, node)
    # the host scores the file the sandbox wrote, whoever wrote it: a trivial predictor scores
    # like the trivial baselines, and the verdict does not call it useful
    assert useful is False, (metrics, baselines)
    best_pcc = max(b.get("DeltaPCC") or -1 for b in baselines.values())
    assert (metrics.get("DeltaPCC") or -1) <= best_pcc + 1e-6


# ---------------------------------------------------------------- merit cheats, host side (issue 26)

def _verdict(ad, t, pred):
    from harmonycell.tools.evaluation.metrics import score
    from harmonycell.tools.evaluation.verdict import judge_report

    return judge_report(score(t, pred), ad, "test")


@pytest.fixture(scope="module", params=["synthetic", "norman"])
def merit_task(request):
    from metrics_data import make_canonical

    from harmonycell.tools.evaluation.baselines import baseline_predictions
    from harmonycell.tools.evaluation.pseudobulk import targets_for

    if request.param == "synthetic":
        ad = make_canonical(n_perts=60, seed=41)
    else:
        from harmonycell.tools.data.unify import unify

        real = Path(__file__).parents[1] / ".." / "shared" / "data" / "real"
        ad = unify([real / "norman_mcfaline_perturbench_devel.h5ad"], task="unseen-perturbation",
                   seed=0).adata
    t = targets_for(ad, "test")
    return ad, t, baseline_predictions(ad, "test")["train_mean"]


def test_the_oracle_is_useful(merit_task):
    ad, t, _ = merit_task
    v = _verdict(ad, t, t.y.copy())
    assert v.useful, v.headline
    assert {c.baseline for c in v.comparisons} >= {"control_mean", "train_mean", "linear"}


@pytest.mark.parametrize("cheat", ["target-gene trick", "y_ctrl + 0.3 x train shift",
                                   "y_ctrl + 1.0 x train shift", "y_ctrl + 2.0 x train shift",
                                   "y_ctrl + 0.3 x fixed vector", "y_ctrl + 1.0 x fixed vector",
                                   "y_ctrl + 2.0 x fixed vector", "noise around the training centroid",
                                   "another query's true profile", "random"])
def test_a_prediction_with_no_learning_is_never_useful(merit_task, cheat):
    from cheats import merit_cheats

    ad, t, train_mean = merit_task
    v = _verdict(ad, t, merit_cheats(t, train_mean)[cheat])
    assert v.useful is False, (cheat, v.headline)
    assert v.headline.startswith("NOT BETTER THAN BASELINES")
