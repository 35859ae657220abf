"""Bad input: each case gets a specific error (what, where, what to do) and nothing in DIR."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from harmonycell.agents.cli.data import app
from harmonycell.tools.data.audit import audit_h5ad
from harmonycell.tools.errors import HarmonyCellError, InputError, SpecError
from harmonycell.tools.data.unify import unify
from unify_helpers import small_h5ad

N = 40
GOOD = {"perturbation": ["control"] * 10 + ["TP53"] * 15 + ["MYC"] * 15, "cell_type": ["K562"] * N}


def build(tmp_path, case: str):
    p = tmp_path / f"{case}.h5ad"
    if case == "no_label_column":
        return small_h5ad(p, {"cell_type": ["K562"] * N, "n_counts": np.arange(N)})
    if case == "zero_controls":
        return small_h5ad(p, {"perturbation": ["TP53"] * 20 + ["MYC"] * 20})
    if case == "zero_perturbed":
        return small_h5ad(p, {"perturbation": ["control"] * N})
    if case == "duplicate_cells":
        return small_h5ad(p, GOOD, obs_names=["c0"] * 2 + [f"c{i}" for i in range(2, N)])
    if case == "duplicate_genes":
        return small_h5ad(p, GOOD, var_names=["GENE0", "GENE0"] + [f"GENE{i}" for i in range(2, 30)])
    if case in ("nan", "inf", "negative"):
        X = np.random.default_rng(0).poisson(2.0, (N, 30)).astype(np.float32)
        X[3, 4] = {"nan": np.nan, "inf": np.inf, "negative": -1.5}[case]
        return small_h5ad(p, GOOD, X=sp.csr_matrix(X))
    if case == "empty_file":
        p.write_bytes(b"")
        return p
    if case == "zero_cells":
        return small_h5ad(p, {"perturbation": []}, X=sp.csr_matrix((0, 5), dtype=np.float32))
    if case == "csv_renamed":
        p.write_text("cell,perturbation,GENE0\nc0,control,1\nc1,TP53,2\n")
        return p
    if case == "missing_file":
        return p
    raise AssertionError(case)


CASES = {
    # case: (error class, words the message must contain)
    "no_label_column": (SpecError, ["no plausible perturbation column", "add a column"]),
    "zero_controls": (SpecError, ["zero control cells", "'perturbation'", "control word"]),
    "zero_perturbed": (SpecError, ["zero perturbed cells", "'perturbation'"]),
    "duplicate_cells": (InputError, ["duplicate cell names", "obs_names", "make them unique"]),
    "duplicate_genes": (InputError, ["non-unique gene names", "var_names", "GENE0"]),
    "nan": (InputError, ["NaN/inf", "X", "replace or drop"]),
    "inf": (InputError, ["NaN/inf", "X"]),
    "negative": (InputError, ["negative values", "X", "raw counts"]),
    "empty_file": (InputError, ["empty (0 bytes)", "re-export"]),
    "zero_cells": (InputError, ["no data: 0 cells"]),
    "csv_renamed": (InputError, ["not an HDF5/.h5ad file", "looks like text", "convert it"]),
    "missing_file": (InputError, ["file not found"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unify_rejects_with_specific_error(tmp_path, case):
    cls, words = CASES[case]
    path = build(tmp_path, case)
    with pytest.raises(cls) as e:
        unify([path])
    msg = str(e.value)
    for w in words:
        assert w in msg, (w, msg)
    assert str(path) in msg  # where
    assert e.value.fix  # what to do


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_unify_writes_nothing_and_exits_2(tmp_path, case):
    path = build(tmp_path, case)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["unify", str(path), "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and CASES[case][1][0] in res.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left


def test_one_bad_input_among_good_ones_writes_nothing(tmp_path):
    good = small_h5ad(tmp_path / "good.h5ad", GOOD)
    bad = build(tmp_path, "nan")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["unify", str(good), str(bad), "--out", str(out)])
    assert res.exit_code == 2 and not out.exists()


@pytest.mark.parametrize("case", ["empty_file", "csv_renamed", "missing_file", "zero_cells"])
def test_audit_rejects_unreadable(tmp_path, case):
    path = build(tmp_path, case)
    with pytest.raises(InputError):
        audit_h5ad(path)


def test_audit_reports_nonfinite_and_negative(tmp_path):
    a = audit_h5ad(build(tmp_path, "nan"))
    assert a.x.n_nonfinite == 1
    b = audit_h5ad(build(tmp_path, "negative"))
    assert b.x.n_negative == 1 and not b.x.looks_raw_counts


def test_errors_are_harmonycell_errors(tmp_path):
    for case in CASES:
        with pytest.raises(HarmonyCellError):
            unify([build(tmp_path, case)])
