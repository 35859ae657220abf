"""Baselines and the docs generator on the real data in ../shared/data/real (read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import baselines_doc
from harmonycell.tools.evaluation.baselines import compute_baselines
from harmonycell.tools.data.unify import unify

REAL = Path(__file__).parents[1] / ".." / "shared" / "data" / "real"


def test_papalexi_unseen_perturbation_baselines():
    out = unify([REAL / "papalexi_eccite_lowmoi.h5ad"], task="unseen-perturbation", seed=0)
    rep = compute_baselines(out.adata, "test")
    assert rep.test_conditions == sorted(out.adata.uns["split_info"]["test_conditions"])
    assert set(rep.baselines) == {"control_mean", "train_mean", "linear", "linear_go", "noise_ceiling"}
    assert rep.baselines["control_mean"]["DeltaPCC"] is None
    assert rep.baselines["control_mean"]["Matrix_Distance"] == pytest.approx(1.0)
    assert rep.baselines["train_mean"]["Mean_rank_rmse"] == pytest.approx(0.5)  # constant prediction
    # most Papalexi targets are among its 299 genes: the linear model mostly runs for real
    assert rep.fallbacks["linear"].n < rep.n_queries


def test_docs_generator_runs_on_the_real_data(tmp_path):
    out = tmp_path / "baselines.md"
    baselines_doc.main(["--data", str(REAL), "--out", str(out), "--seeds", "1", "--folds", "2"])
    text = out.read_text()
    for case in baselines_doc.CASES:
        assert f"## {case.title}" in text
    # every case: the fold-0 table, then the folds pooled, with paired comparisons and conclusions
    assert text.count("Cross-validated: 2 folds x 1 seed(s)") == 3
    assert text.count("Is `linear` really different?") == 3
    assert "**better**" in text or "**worse**" in text or "**indistinguishable**" in text
    assert "`linear`: " in text and "## Metrics" in text
