"""Two cell types and one stimulation: holding out one cell type leaves nothing to validate on.
The run still finishes, says the search could not rank nodes, and scores the test on the host."""

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def test_run_without_validation_perturbations(tmp_path):
    rng = np.random.default_rng(0)
    n, g = 400, 60
    cell_type = np.repeat(["T cell", "B cell"], n // 2)
    stim = np.tile(["unstim", "IFN-b"], n // 2)
    rate = rng.gamma(2.0, 1.0, g)
    counts = rng.poisson(rate * np.where(stim[:, None] == "IFN-b", 1.8, 1.0) * 20)
    obs = pd.DataFrame({"stimulation": stim, "celltype": cell_type},
                       index=[f"c{i}" for i in range(n)])
    path = tmp_path / "two_types.h5ad"
    ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs,
               var=pd.DataFrame(index=[f"GENE{i}" for i in range(g)])).write_h5ad(path)
    res = subprocess.run([sys.executable, "-m", "harmonycell.agents.cli", "run", str(path),
                          "--task", "unseen-cell-context", "--out", str(tmp_path / "runs"),
                          "--budget", "1", "--epochs", "2", "--backend", "local"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    recs = [json.loads(l) for l in (run_dir / "transcript.jsonl").read_text().splitlines()]
    assert any(r["type"] == "no_validation_split" for r in recs)
    test = next(r for r in recs if r["type"] == "TestScored")["content"]
    first = next(r for r in recs if r["type"] == "NodePlan")["content"]["node_id"]  # n001 is its paradigm
    assert test["node_id"] == first and test["metrics"]["RMSE"] is not None
