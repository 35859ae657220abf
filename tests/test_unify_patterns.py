"""Real-world schema patterns the builtin Unifier must handle (issue #12), each on a variant of
the shared real data built here (never copied into the repository)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from harmonycell.tools.data.audit import audit_h5ad, id_type
from harmonycell.tools.data.harmonise import cell_type_key, harmonise_cell_types
from harmonycell.tools.data.mapping import control_match
from harmonycell.tools.data.species import species_of
from harmonycell.tools.data.unify import unify
from unify_helpers import real

N = 600


@pytest.fixture(scope="module")
def pap() -> ad.AnnData:
    a = ad.read_h5ad(real("papalexi_eccite_lowmoi"))
    a = a[np.sort(np.random.default_rng(0).choice(a.n_obs, N, replace=False))].copy()
    return ad.AnnData(X=sp.csr_matrix(a.X, dtype=np.float32), obs=a.obs[["perturbation", "grna"]].copy(),
                      var=pd.DataFrame(index=a.var_names.astype(str)))


@pytest.fixture(scope="module")
def norman() -> ad.AnnData:
    a = ad.read_h5ad(real("norman_mcfaline_perturbench_devel"))
    return ad.AnnData(X=a.X, obs=a.obs[["condition", "cell_type"]].copy(), var=pd.DataFrame(index=a.var_names))


def save(a: ad.AnnData, path: Path) -> Path:
    a.write_h5ad(path)
    return path


def guides(a: ad.AnnData) -> tuple[pd.Series, pd.Series]:
    """Per-gene and per-guide labels in the style of public CRISPR screens, NaN where no guide."""
    gene = a.obs["perturbation"].astype(str).replace({"non-targeting": "NonTargetingControlGuide"})
    num = a.obs["grna"].astype(str).str.extract(r"(\d+)$", expand=False).astype(int)
    guide = pd.Series([f"{g}_sgRNA_{n:02d}" for g, n in zip(gene, num)], index=a.obs_names, dtype=object)
    gene = pd.Series(gene.to_numpy(), index=a.obs_names, dtype=object)
    nan = np.arange(a.n_obs) % 20 == 0
    gene[nan], guide[nan] = np.nan, np.nan
    return gene, guide


def test_gene_level_column_wins_over_its_guide_column(pap, tmp_path):
    a = pap.copy()
    gene, guide = guides(a)
    a.obs = pd.DataFrame({"guide_identity": guide, "target": gene}, index=a.obs_names)
    o = unify([save(a, tmp_path / "screen.h5ad")])
    r = o.report.inputs[0]
    assert r.fields["condition_name"].source == "target"
    assert r.fields["cell_type"].source != "guide_identity"  # 'identity' is no cell type here
    assert "gene level of guide column 'guide_identity'" in r.fields["condition_name"].reason
    assert r.dropped_reasons == {"unknown perturbation (NaN/unassigned label)": int((np.arange(N) % 20 == 0).sum())}
    current = o.report.gene_names.labels  # MARCH8 is MARCHF8 today
    expected = {current.get(g, g) for g in pap.obs["perturbation"].astype(str)} - {"non-targeting"}
    assert set(o.adata.obs.loc[~o.adata.obs["is_control"], "condition_name"].astype(str)) <= expected
    assert r.controls == int(((pap.obs["perturbation"] == "non-targeting") & (np.arange(N) % 20 != 0)).sum())


def test_guide_only_column_is_pooled_by_gene(pap, tmp_path):
    a = pap.copy()
    _, guide = guides(a)
    a.obs = pd.DataFrame({"sgRNA": guide}, index=a.obs_names)
    o = unify([save(a, tmp_path / "guides.h5ad")], task="unseen-perturbation")
    obs = o.adata.obs
    pert = obs.loc[~obs["is_control"], "condition_name"].astype(str)
    current = o.report.gene_names.labels  # MARCH8 is MARCHF8 today
    assert set(pert) <= {current.get(g, g) for g in pap.obs["perturbation"].astype(str)}  # genes, not guides
    assert "pooled by gene" in o.report.inputs[0].fields["condition_name"].reason
    # a held-out gene has none of its guides in training
    split = obs.loc[~obs["is_control"], "split"].astype(str)
    assert not set(pert[split == "test"]) & set(pert[split == "train"])


@pytest.mark.parametrize("label", ["NonTargetingControlGuide", "non-targeting_2", "safe-targeting", "NT_1",
                                   "scrambled", "intergenic", "NegCtrl0_NegCtrl0", "sgNTC_3"])
def test_control_phrases_are_controls_and_the_rule_is_reported(pap, tmp_path, label):
    a = pap.copy()
    a.obs = pd.DataFrame({"perturbation": a.obs["perturbation"].astype(str).replace({"non-targeting": label})},
                         index=a.obs_names)
    o = unify([save(a, tmp_path / "ctl.h5ad")])
    r = o.report.inputs[0]
    assert r.controls == int((pap.obs["perturbation"] == "non-targeting").sum())
    assert control_match(label)[1] in r.fields["condition_name"].reason


@pytest.mark.parametrize("gene", ["NT5E", "MYC_sgRNA_2", "TP53_ctrl", "Rag1"])
def test_gene_names_are_not_mistaken_for_controls(gene):
    assert control_match(gene) is None


@pytest.mark.parametrize("name", ["cell", "celltype", "annotation", "CellType", "cell_line", "cluster"])
def test_plain_cell_type_column_names(norman, tmp_path, name):
    a = norman.copy()
    a.obs = a.obs.rename(columns={"cell_type": name})
    o = unify([save(a, tmp_path / "ct.h5ad")], task="unseen-cell-context")
    assert o.report.inputs[0].fields["cell_type"].source == name
    assert set(o.adata.obs["cell_type"].astype(str)) == set(norman.obs["cell_type"].astype(str))


def test_cell_type_column_found_by_its_values(pap, tmp_path):
    a = pap.copy()
    a.obs["group"] = np.where(np.arange(N) % 2 == 0, "CD4 T cells", "B cells")
    o = unify([save(a, tmp_path / "vals.h5ad")])
    assert o.report.inputs[0].fields["cell_type"].source == "group"


def test_mouse_symbols_are_symbols_of_mouse(pap, tmp_path):
    names = ["0610009B22Rik", "Actb", "Gm12345", "Cd4", "Xist"]
    assert id_type(pd.Index(names)) == "symbol"
    a = pap.copy()
    a.var_names = [v.capitalize() for v in a.var_names[:-3]] + names[:3]
    a.obs = a.obs[["perturbation"]]
    o = unify([save(a, tmp_path / "mouse.h5ad")])
    assert o.report.inputs[0].species == "mouse" and o.report.inputs[0].gene_id_type == "symbol"
    assert species_of(pd.Series(["ACTB", "CD4"]))[0] == "human"


@pytest.mark.parametrize("target, word", [(1e4, "CP10k"), (1e6, "CPM/TPM")])
def test_normalised_unlogged_values_are_detected_and_logged(pap, tmp_path, target, word):
    a = pap.copy()
    X = a.X.toarray()
    a.X = sp.csr_matrix((X / X.sum(1, keepdims=True) * target).astype(np.float32))
    path = save(a, tmp_path / "norm.h5ad")
    x = audit_h5ad(path).x
    assert x.scale == "normalised" and word in x.reason and x.needs_normalising()
    o = unify([path])
    ref = unify([save(pap.copy(), tmp_path / "counts.h5ad")])
    np.testing.assert_allclose(o.adata.X.toarray(), ref.adata.X.toarray(), atol=1e-4)


def test_kang_cell_types_harmonised_across_inputs_with_every_merge_reported(tmp_path):
    o = unify([real("kang_scgen_valid"), real("kang_muscat_example")], task="unseen-cell-context")
    merges = o.report.harmonised["cell_types"]

    def merged(a: str, b: str) -> bool:  # the spelling kept is the one with more cells
        return merges.get(a) == b or merges.get(b) == a

    # the muscat example holds five of the seven scgen types, each under another name
    pairs = [("CD4 T cells", "CD4T"), ("CD8 T cells", "CD8T"), ("B cells", "B"),
             ("CD14+ Monocytes", "CD14+Mono"), ("FCGR3A+ Monocytes", "FCGR3A+Mono")]
    assert all(merged(a, b) for a, b in pairs), merges
    assert len(merges) == len(pairs)  # nothing else merged
    per_ds = o.adata.obs.groupby("dataset_id", observed=True)["cell_type"].agg(lambda s: set(s.astype(str)))
    assert per_ds["kang_muscat_example"] < per_ds["kang_scgen_valid"]  # one vocabulary for both
    scales = {i.dataset_id: i.scale for i in o.report.inputs}
    assert scales == {"kang_scgen_valid": "log", "kang_muscat_example": "counts"}


def test_cell_type_key_rule():
    assert cell_type_key("CD4 T cells") == cell_type_key("CD4T") == "cd4t"
    assert cell_type_key("B cells") == cell_type_key("B") == "b"
    assert cell_type_key("CD4 T cells") != cell_type_key("CD8 T cells")
    merged, m = harmonise_cell_types(pd.Series(["K562"] * 3 + ["k562"]))
    assert set(merged) == {"K562"} and m == {"k562": "K562"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harmonycell.agents.cli", *args], capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def test_audit_says_what_it_guessed_and_writes_the_spec_that_unify_follows(tmp_path, pap):
    a = pap.copy()
    a.obs["cell"] = "THP-1"
    src = save(a, tmp_path / "pap.h5ad")
    p = cli("audit", str(src), "--write-spec", str(tmp_path / "specs"))
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert "## What the Unifier will do" in text
    assert "`perturbation` (score" in text and "`grna` (score" in text and "guide level" in text
    assert "control labels: `non-targeting` (every content word (nontargeting) is a control word of class non-targeting)" in text
    assert "cell_type: direct `cell`" in text and "scale: counts" in text
    assert "Warning" not in p.stderr  # library warnings do not reach the terminal
    spec = json.loads((tmp_path / "specs" / "pap.json").read_text())
    spec["cell_type"] = {"type": "constant", "value": "THP-1 (edited)"}
    (tmp_path / "specs" / "pap.json").write_text(json.dumps(spec))
    p = cli("unify", str(src), "--out", str(tmp_path / "out"), "--specs", str(tmp_path / "specs"))
    assert p.returncode == 0, p.stderr
    assert "Warning" not in p.stderr and p.stderr.strip() == ""
    u = ad.read_h5ad(tmp_path / "out" / "unified.h5ad")
    assert set(u.obs["cell_type"].astype(str)) == {"THP-1 (edited)"}
