"""`import harmonycell as hc`: load a finished run, read it as pandas, score one's own predictions
with the CLI's protocol, start a run on in-memory AnnData; installed both ways."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest

import harmonycell as hc
from harmonycell.tools.data.taskdata import load_meta
from harmonycell.tools.errors import InputError

from predict_support import cli, predict_run  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]


def test_load_run_reads_verdict_comparisons_and_tree(predict_run):
    run = hc.load_run(predict_run)
    verdict = json.loads((predict_run / "verdict.json").read_text())
    assert run.verdict["headline"] == verdict["headline"] and run.run_id in repr(run)
    assert isinstance(run.comparisons, pd.DataFrame)
    assert len(run.comparisons) == len(verdict["comparisons"])
    assert {"baseline", "metric", "p_holm", "conclusion"} <= set(run.comparisons.columns)
    tree = run.tree
    assert run.selected in tree.index and set(tree["status"]) <= {"ok", "failed", "abandoned", "planned"}
    assert tree.loc[run.selected, "action"] == run.search_tree.nodes[run.selected].action


def test_load_run_refuses_a_folder_that_is_not_a_finished_run(tmp_path):
    with pytest.raises(InputError, match="not a run folder"):
        hc.load_run(tmp_path)


def test_score_is_the_cli_score_compare(predict_run):
    run = hc.load_run(predict_run)
    pred = predict_run / "nodes" / run.selected / "pred_test.npy"
    res = cli("score", predict_run / "unify", pred, "--compare", "--json")
    assert res.returncode == 0, res.stderr
    cli_verdict = json.loads(res.stdout)
    ours = hc.score(predict_run, pred)
    assert ours.headline == cli_verdict["headline"] and ours.useful == cli_verdict["useful"]
    assert ours.aggregate == pytest.approx(cli_verdict["aggregate"], nan_ok=True)
    # the same predictions as an array, and as the AnnData predict returns, rows in any order
    assert hc.score(run, np.load(pred)).headline == ours.headline
    meta = load_meta(predict_run / "data" / "sandbox")
    conds = [q["condition"] for q in meta["queries"]["test"]]
    as_adata = run.predict(sorted(set(conds)), refit=False)
    scored = hc.score(predict_run / "unify" / "unified.h5ad", as_adata[::-1].copy())
    assert scored.headline == ours.headline and scored.predictions_sha256 == ours.predictions_sha256


def test_run_on_in_memory_anndata(synthetic_dir, tmp_path):
    a = anndata.read_h5ad(synthetic_dir / "labA_counts.h5ad")
    b = anndata.read_h5ad(synthetic_dir / "labB_lognorm.h5ad")
    run = hc.run([a, b], task="unseen-perturbation", out=tmp_path / "runs", budget=1, epochs=2, no_kb=True,
                 quiet=True)
    assert run.verdict["valid"] is True and run.report.exists()
    kept = sorted((tmp_path / "runs" / "inputs").glob("*.h5ad"))
    assert len(kept) == 2 and [Path(i.path) for i in run.config.inputs] == [p.resolve() for p in kept]


def test_a_regular_install_gives_import_harmonycell(tmp_path):
    """pip install . (not editable) into a fresh venv: `import harmonycell` is the API."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    pip = subprocess.run([venv / "bin" / "pip", "install", "--no-deps", "-q", "."], cwd=src,
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    code = ("import harmonycell as hc, harmonycell.agents.cli.predict; "
            "print(hc.__file__); print(callable(hc.predict), callable(hc.load_run), callable(hc.score))")
    res = subprocess.run([venv / "bin" / "python", "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    where, ok = res.stdout.splitlines()
    assert str(venv) in where and ok == "True True True"


def test_run_predict_passes_members_and_cells_through(predict_run):
    run = hc.load_run(predict_run)
    cells = run.predict("SG0003", contexts="LineA", members=1, cells=5)
    assert cells.n_obs == 5 and set(cells.obs["condition_name"]) == {"SG0003"} and cells.obs["predicted"].all()
    assert cells.uns["harmonycell"]["cells"]["per_query"] == 5
    assert cells.uns["harmonycell"]["uncertainty"].startswith("none: --members 1")
