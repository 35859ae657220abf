"""The bad-input matrix (issue #20): every case ends in a clear error or a correct result.

A clear error is: exit code 2, exactly one line on stderr that says what is wrong and where
(`error: WHERE: WHAT -- FIX`), no traceback, and nothing written (no run folder, no unify
output). A correct result is asserted case by case. Inputs are small files built here from the
real Papalexi data (300 cells), never copied into the repository. The CLI runs in-process
(`harmonycell.agents.cli.main.main`), so a traceback would fail the test as an exception.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from harmonycell.agents.cli.main import main
from unify_helpers import real

N_CELLS = 300


@pytest.fixture(scope="module")
def base() -> ad.AnnData:
    """300 real Papalexi cells (raw counts, 299 genes), label and replicate columns only."""
    a = ad.read_h5ad(real("papalexi_eccite_lowmoi"))
    idx = np.sort(np.random.default_rng(0).choice(a.n_obs, N_CELLS, replace=False))
    a = a[idx].copy()
    return ad.AnnData(X=sp.csr_matrix(a.X, dtype=np.float32), obs=a.obs[["perturbation", "bio_rep"]].copy(),
                      var=pd.DataFrame(index=a.var_names.astype(str)))


def write(a: ad.AnnData, path: Path) -> Path:
    a.write_h5ad(path)
    return path


def variant(base: ad.AnnData, tmp: Path, name: str, fn=None) -> Path:
    a = base.copy()
    if fn is not None:
        a = fn(a) or a
    return write(a, tmp / f"{name}.h5ad")


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["harmonycell", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def set_x(value):
    def fn(a):
        X = a.X.toarray()
        X[3, 4] = value
        a.X = sp.csr_matrix(X)
    return fn


def zero_x(a):
    a.X = sp.csr_matrix(a.shape, dtype=np.float32)


def one_gene(a):
    return a[:, :1].copy()


def no_variance(a):
    a.X = sp.csr_matrix(np.tile(a.X[0].toarray(), (a.n_obs, 1)))


def logged_twice(a):
    X = a.X.toarray()
    X = np.log1p(np.log1p(X / X.sum(1, keepdims=True) * 1e4))
    a.X = sp.csr_matrix(X.astype(np.float32))


def numeric_genes(a):
    a.var_names = [str(i) for i in range(a.n_vars)]


def dup_genes(a):
    a.var_names = [a.var_names[1]] + list(a.var_names[1:])


def dup_cells(a):
    a.obs_names = [a.obs_names[1]] + list(a.obs_names[1:])


def no_label(a):
    a.obs = a.obs[["bio_rep"]]


def no_controls(a):
    a.obs["perturbation"] = a.obs["perturbation"].astype(str).replace({"non-targeting": "TP53"})


def only_controls(a):
    a.obs["perturbation"] = "non-targeting"


def all_nan_label(a):
    a.obs["perturbation"] = np.nan


def one_perturbation(a):
    p = a.obs["perturbation"].astype(str)
    a.obs["perturbation"] = np.where(p == "non-targeting", p, "STAT1")


def mouse(a):
    a.var_names = [v.capitalize() for v in a.var_names]


def ensembl_only(a):
    a.var_names = [f"ENSG{i:011d}" for i in range(a.n_vars)]


def build(case: str, base: ad.AnnData, tmp: Path) -> tuple[list, Path | None]:
    """(command line, a file the command must not create) for a refusal case."""
    good = lambda: variant(base, tmp, "good")  # noqa: E731
    out = tmp / "out"
    unify = lambda files, *extra: (["unify", *files, "--out", out, *extra], out)  # noqa: E731
    run = lambda files, *extra: (["run", *files, "--out", out, "--backend", "local", *extra], out)  # noqa: E731
    p = tmp / f"{case}.h5ad"
    if case == "missing_file":
        return run([p])
    if case == "directory_as_input":
        p.mkdir()
        return run([p])
    if case == "empty_file":
        p.write_bytes(b"")
        return run([p])
    if case == "csv_renamed":
        p.write_text("cell,perturbation,GENE0\nc0,control,1\n")
        return run([p])
    if case == "hdf5_without_x":
        with h5py.File(p, "w") as f:
            f.create_group("obs")
            f.create_group("var")
        return run([p])
    if case == "truncated_file":
        src = good().read_bytes()
        p.write_bytes(src[: len(src) // 2])
        return run([p])
    if case == "audit_truncated_file":
        src = good().read_bytes()
        p.write_bytes(src[: len(src) // 2])
        return ["audit", p], None
    if case == "zero_cells":
        return run([write(base[:0].copy(), p)])
    builders = {"all_zero_x": zero_x, "one_gene": one_gene, "no_variance": no_variance, "nan_in_x": set_x(np.nan),
                "inf_in_x": set_x(np.inf), "negative_x": set_x(-1.0), "logged_twice": logged_twice,
                "numeric_gene_names": numeric_genes, "duplicate_genes": dup_genes, "duplicate_cells": dup_cells,
                "no_label_column": no_label, "no_controls": no_controls, "only_controls": only_controls,
                "all_nan_label": all_nan_label}
    if case in builders:
        return run([variant(base, tmp, case, builders[case])])
    if case in ("unify_" + k for k in ("all_zero_x", "logged_twice", "numeric_gene_names")):
        return unify([variant(base, tmp, case, builders[case[len("unify_"):]])])
    if case == "same_file_twice":
        g = good()
        return run([g, g])
    if case == "same_bytes_twice":
        g = good()
        shutil.copy(g, tmp / "copy.h5ad")
        return run([g, tmp / "copy.h5ad"])
    if case == "unify_same_file_twice":
        g = good()
        return unify([g, g])
    if case == "mouse_with_human":
        return run([good(), variant(base, tmp, "mouse", mouse)])
    if case == "no_shared_genes":
        return unify([good(), variant(base, tmp, "ens", ensembl_only)])
    if case == "one_perturbation_task":
        return run([variant(base, tmp, case, one_perturbation)])
    if case == "unknown_task":
        return run([good()], "--task", "unseen-everything")
    if case == "n_hvg_zero":
        return unify([good()], "--n-hvg", "0")
    if case == "n_hvg_negative":
        return unify([good()], "--n-hvg", "-5")
    if case == "budget_zero":
        return run([good()], "--budget", "0")
    if case == "epochs_zero":
        return run([good()], "--epochs", "0")
    if case == "negative_seed":
        return unify([good()], "--seed", "-1")
    if case == "out_is_a_file":
        (tmp / "afile").write_text("x")
        cmd, _ = run([good()])
        cmd[cmd.index(out)] = tmp / "afile"
        return cmd, tmp / "afile" / "x"
    if case == "unify_out_is_a_file":
        (tmp / "afile").write_text("x")
        cmd, _ = unify([good()])
        cmd[cmd.index(out)] = tmp / "afile"
        return cmd, tmp / "afile" / "x"
    if case == "out_under_a_file":
        (tmp / "afile").write_text("x")
        cmd, _ = run([good()])
        cmd[cmd.index(out)] = tmp / "afile" / "runs"
        return cmd, tmp / "afile" / "runs"
    if case == "unify_out_foreign_folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        cmd, _ = unify([good()])
        return cmd, out / "unified.h5ad"
    if case == "specs_folder_missing":
        return unify([good()], "--specs", tmp / "nospecs")
    if case == "specs_invalid_json":
        (tmp / "specs").mkdir()
        (tmp / "specs" / "good.json").write_text("{not json")
        return run([good()], "--specs", tmp / "specs")
    raise AssertionError(case)


REFUSALS = {  # case: words the one line must contain
    "missing_file": ["file not found"],
    "directory_as_input": ["directory"],
    "empty_file": ["empty (0 bytes)"],
    "csv_renamed": ["not an HDF5/.h5ad file", "looks like text"],
    "hdf5_without_x": ["without the AnnData groups"],
    "truncated_file": ["truncated"],
    "audit_truncated_file": ["truncated"],
    "zero_cells": ["0 cells"],
    "all_zero_x": ["every value of X is 0"],
    "unify_all_zero_x": ["every value of X is 0"],
    "one_gene": ["only 1 gene"],
    "no_variance": ["vary between cells"],
    "nan_in_x": ["NaN/inf"],
    "inf_in_x": ["NaN/inf"],
    "negative_x": ["negative values"],
    "logged_twice": ["log1p applied twice"],
    "unify_logged_twice": ["log1p applied twice"],
    "numeric_gene_names": ["plain numbers"],
    "unify_numeric_gene_names": ["plain numbers"],
    "duplicate_genes": ["non-unique gene names"],
    "duplicate_cells": ["duplicate cell names"],
    "no_label_column": ["no plausible perturbation column"],
    "no_controls": ["zero control cells"],
    "only_controls": ["zero perturbed cells"],
    "all_nan_label": ["perturbation"],
    "same_file_twice": ["is the same file as"],
    "same_bytes_twice": ["same content (sha256)"],
    "unify_same_file_twice": ["is the same file as"],
    "mouse_with_human": ["different species", "mouse", "human"],
    "no_shared_genes": ["share no gene", "Ensembl ids", "names like"],
    "one_perturbation_task": ["needs at least 3 perturbations"],
    "unknown_task": ["unknown task kind"],
    "n_hvg_zero": ["--n-hvg", "at least 1"],
    "n_hvg_negative": ["--n-hvg", "at least 1"],
    "budget_zero": ["--budget", "at least 1"],
    "epochs_zero": ["--epochs", "at least 1"],
    "negative_seed": ["--seed"],
    "out_is_a_file": ["is a file"],
    "unify_out_is_a_file": ["is a file"],
    "out_under_a_file": ["is a file"],
    "unify_out_foreign_folder": ["not empty", "never mixed"],
    "specs_folder_missing": ["spec folder not found"],
    "specs_invalid_json": ["not a valid mapping spec"],
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_input_is_refused_in_one_line(case, base, tmp_path, capsys):
    cmd, must_not_exist = build(case, base, tmp_path)
    code, out, err = cli(cmd, capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    assert " -- " in lines[0], f"no advice in {lines[0]!r}"  # what/where -- what to do
    for word in REFUSALS[case]:
        assert word in lines[0], (word, lines[0])
    if must_not_exist is not None:  # nothing written: no run folder, no unify output
        assert not must_not_exist.exists() or not any(must_not_exist.iterdir()), list(must_not_exist.iterdir())
    assert not list(tmp_path.glob(".out.*")), "a staging folder was left behind"


# --- cases whose right answer is a correct result ---------------------------------------------
def test_unify_out_of_another_input_is_replaced_whole(base, tmp_path, capsys):
    a = variant(base, tmp_path, "first")
    b = variant(base, tmp_path, "second", lambda x: x[: N_CELLS // 2].copy())
    out = tmp_path / "out"
    assert cli(["unify", a, "--out", out], capsys)[0] == 0
    assert (out / "mapping" / "first.json").exists()
    code, stdout, _ = cli(["unify", b, "--out", out], capsys)
    assert code == 0 and "replaced as a whole" in stdout
    assert sorted(p.name for p in (out / "mapping").iterdir()) == ["second.json"]
    assert sorted(p.name for p in (out / "audit").iterdir()) == ["second.json", "second.md"]
    assert ad.read_h5ad(out / "unified.h5ad").n_obs <= N_CELLS // 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_case_variants_of_a_label_are_one_perturbation(base, tmp_path, capsys):
    def lower_some(a):
        p = a.obs["perturbation"].astype(str).to_numpy(dtype=object)
        p[::3] = [x if x == "non-targeting" else x.lower() for x in p[::3]]
        a.obs["perturbation"] = p
    f = variant(base, tmp_path, "case", lower_some)
    code, stdout, _ = cli(["unify", f, "--out", tmp_path / "out"], capsys)
    assert code == 0
    u = ad.read_h5ad(tmp_path / "out" / "unified.h5ad")
    names = set(u.obs["condition_name"].astype(str))
    report = json.loads((tmp_path / "out" / "unify_report.json").read_text())
    current = report["gene_names"]["labels"]  # MARCH8 is MARCHF8 today
    original = set(base.obs["perturbation"].astype(str)) - {"non-targeting"}
    # every lower-cased twin merged into the real spelling, read as today's symbol
    assert names - {"control"} == {current.get(g, g) for g in original}
    merges = report["harmonised"]["labels"]
    assert merges and all(k == v.lower() and v in original for k, v in merges.items())
    assert "merged label" in stdout


def test_missing_cell_types_are_never_a_context(base, tmp_path, capsys):
    def with_types(a):
        ct = np.where(np.arange(a.n_obs) % 2 == 0, "THP-1", "THP-1 activated").astype(object)
        ct[::7] = np.nan
        a.obs["cell_type"] = ct
    f = variant(base, tmp_path, "ct", with_types)
    code, _, _ = cli(["unify", f, "--out", tmp_path / "out"], capsys)
    assert code == 0
    u = ad.read_h5ad(tmp_path / "out" / "unified.h5ad")
    assert set(u.obs["cell_type"].astype(str)) == {"THP-1", "THP-1 activated"}
    rep = json.loads((tmp_path / "out" / "unify_report.json").read_text())["inputs"][0]
    assert rep["dropped_reasons"]["missing cell type (NaN/unknown)"] == len(range(0, N_CELLS, 7))


def test_cp10k_input_is_normalised_and_logged_with_a_note(base, tmp_path, capsys):
    def cp10k(a):
        X = a.X.toarray()
        a.X = sp.csr_matrix((X / X.sum(1, keepdims=True) * 1e4).astype(np.float32))
    f = variant(base, tmp_path, "cp10k", cp10k)
    g = variant(base, tmp_path, "counts")
    for name, path in (("cp10k", f), ("counts", g)):
        assert cli(["unify", path, "--out", tmp_path / name], capsys)[0] == 0
    rep = json.loads((tmp_path / "cp10k" / "unify_report.json").read_text())["inputs"][0]
    assert rep["scale"] == "normalised" and rep["normalised"] and not rep["already_log"]
    a, b = (ad.read_h5ad(tmp_path / n / "unified.h5ad") for n in ("cp10k", "counts"))
    assert a.X.max() < 15  # logged once, not left on the CP10k scale
    np.testing.assert_allclose(a.X.toarray(), b.X.toarray(), atol=1e-4)  # same as counts -> log1p CP10k


def test_nan_perturbation_cells_are_dropped_and_counted(base, tmp_path, capsys):
    def some_nan(a):
        p = a.obs["perturbation"].astype(object)
        p.iloc[::10] = np.nan
        a.obs["perturbation"] = p
    f = variant(base, tmp_path, "nanlab", some_nan)
    assert cli(["unify", f, "--out", tmp_path / "out"], capsys)[0] == 0
    rep = json.loads((tmp_path / "out" / "unify_report.json").read_text())["inputs"][0]
    assert rep["dropped_reasons"] == {"unknown perturbation (NaN/unassigned label)": N_CELLS // 10}
    assert rep["n_cells_out"] == N_CELLS - N_CELLS // 10


# --- writes that cannot half-finish -------------------------------------------------------------
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["harmonycell", *sys.argv[2:]]
from harmonycell.agents.cli.main import main
main()
"""


def limited_cli(limit: int, *args) -> "subprocess.CompletedProcess":
    import subprocess

    return subprocess.run([sys.executable, "-c", LIMITED, str(limit), *map(str, args)], capture_output=True,
                          text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_unify_write_failure_leaves_nothing(base, tmp_path):
    """A write that fails mid-way (file-size limit standing in for a full disk) leaves no output
    folder and no staging folder, and ends in one line with exit 2."""
    f = variant(base, tmp_path, "good")
    p = limited_cli(150_000, "unify", f, "--out", tmp_path / "out")
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "cannot write the outputs" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".out.")]


def test_killed_unify_write_leaves_no_partial_output_and_is_cleaned_next_time(base, tmp_path, capsys):
    """A staging folder left by a killed write is not output (the folder appears by one rename)
    and the next write to the same --out removes it."""
    f = variant(base, tmp_path, "good")
    stale = tmp_path / ".out.abcd1234"
    (stale / "mapping").mkdir(parents=True)
    (stale / "unified.h5ad").write_bytes(b"half")
    assert cli(["unify", f, "--out", tmp_path / "out"], capsys)[0] == 0
    assert not stale.exists()
    assert ad.read_h5ad(tmp_path / "out" / "unified.h5ad").n_obs > 0


def test_run_write_failure_marks_the_run_failed_with_the_reason(base, tmp_path):
    f = variant(base, tmp_path, "good")
    p = limited_cli(150_000, "run", f, "--out", tmp_path / "runs", "--backend", "local", "--budget", "1",
                    "--epochs", "1")
    lines = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith("warning:")]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr
    (run,) = list((tmp_path / "runs").iterdir())
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and status["error"]
    assert not (run / "unify" / "unified.h5ad").exists()  # nothing half-written kept
