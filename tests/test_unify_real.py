"""Unify each of the six real datasets and compare with values read off the files by hand.

Expected values were verified by hand with pandas value_counts on the raw obs columns:
- kang_scgen_valid: condition control 936 / stimulated 1039; X max 6.77, non-integer.
- kang_muscat_example: group_id ctrl 750 / stim 806; integer counts up to 1891; donors 101, 107
  inside sample_id (ctrl101, stim107 ...).
- norman_mcfaline_perturbench_devel: condition control 400 (norman19 100 + mcfaline23 300),
  33 other labels; perturbation_type CRISPRa/CRISPRi; log values (max 6.95).
- norman_gears_subset: 50 cells, 'ctrl' 6; 41 distinct conditions once 'A+ctrl'/'ctrl+A' become
  'A' (e.g. ctrl+ETS2 -> ETS2); control column 0/1 agrees; log values (max 2.61).
- papalexi_eccite_lowmoi: perturbation non-targeting 2386, 25 genes; raw counts (max 278).
- zhao_glioblastoma_panobinostat: condition ctrl 2500 / panobinostat 2500; treatment text
  '0.2 uM panobinostat' = 200 nM; donors = patient_id (5); raw counts (max 1318).
"""

from __future__ import annotations

import numpy as np
import pytest

from harmonycell.tools.schema import OBSM_DOSE, OBSM_MASK, UNS_PERTS
from harmonycell.tools.data.unify import unify
from unify_helpers import dense, real

EXPECTED = {
    # name: (controls, perturbed, dropped, conditions, pert_type, already_log, gene id type)
    "kang_scgen_valid": (936, 1039, 0, 1, "cytokine", True, "symbol"),
    "kang_muscat_example": (750, 806, 0, 1, "cytokine", False, "symbol"),
    "norman_mcfaline_perturbench_devel": (400, 5561, 0, 33, "crispr", True, "symbol"),
    "norman_gears_subset": (6, 44, 0, 41, "crispr", True, "ensembl"),
    "papalexi_eccite_lowmoi": (2386, 18343, 0, 25, "crispr", False, "symbol"),
    "zhao_glioblastoma_panobinostat": (2500, 2500, 0, 1, "drug", False, "ensembl"),
}

_cache: dict = {}


def outcome(name: str):
    if name not in _cache:
        _cache[name] = unify([real(name)])
    return _cache[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_dataset_matches_hand_verified_table(name):
    ctrl, pert, dropped, conds, ptype, already_log, idtype = EXPECTED[name]
    o = outcome(name)
    r = o.report.inputs[0]
    assert (r.controls, r.perturbed, r.dropped, r.conditions) == (ctrl, pert, dropped, conds)
    assert r.pert_type == {ptype: pert}
    assert r.already_log is already_log and r.normalised is (not already_log)
    assert r.gene_id_type == idtype
    a = o.adata
    # the canonical AnnData itself agrees with the report
    assert int(a.obs["is_control"].sum()) == ctrl
    assert set(a.obs.loc[a.obs["is_control"], "condition_name"]) == {"control"}
    assert set(a.obs.loc[a.obs["is_control"], "pert_type"]) == {"control"}
    assert a.obs.loc[~a.obs["is_control"], "condition_name"].nunique() == conds
    assert a.n_vars == min(2000, r.genes_in)
    # never logged twice; raw counts normalised to log1p(1e4-scaled) values
    X = a.X
    assert np.isfinite(X.data).all() and X.data.min() >= 0
    assert X.data.max() < 12
    if not already_log:
        assert not np.allclose(X.data, np.round(X.data))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_pert_mask_encodes_condition(name):
    a = outcome(name).adata
    vocab = list(a.uns[UNS_PERTS])
    mask = dense(a.obsm[OBSM_MASK])
    assert mask.shape == (a.n_obs, len(vocab))
    rows = np.random.default_rng(0).choice(a.n_obs, size=min(300, a.n_obs), replace=False)
    for i in rows:
        cond = a.obs["condition_name"].iloc[i]
        on = sorted(vocab[j] for j in np.flatnonzero(mask[i]))
        assert on == ([] if cond == "control" else sorted(cond.split("+")))
    dose = dense(a.obsm[OBSM_DOSE])
    assert ((dose > 0) == (mask > 0)).all()


def test_gears_ctrl_convention_and_control_column():
    a = outcome("norman_gears_subset").adata
    conds = set(a.obs["condition_name"])
    assert {"ETS2", "COL1A1", "CDKN1A"} <= conds  # from ctrl+ETS2, COL1A1+ctrl, ctrl+CDKN1A
    assert "CEBPE+ZC3HAV1" in conds  # 'ZC3HAV1+CEBPE' sorted
    assert not any("ctrl" in c for c in conds)
    spec = outcome("norman_gears_subset").specs["norman_gears_subset"]
    assert spec.is_control.type == "logic" and "control" in spec.is_control.expression
    assert spec.gene_symbol_column == "feature_name"
    assert a.var.index[0].startswith("ENSG") and "gene_symbol" in a.var


def test_zhao_dose_parsed_from_text_and_donors():
    o = outcome("zhao_glioblastoma_panobinostat")
    a, spec = o.adata, o.specs["zhao_glioblastoma_panobinostat"]
    assert spec.dose.type == "logic" and "treatment" in spec.dose.expression
    scale = a.uns["pert_dose_scale"]
    assert list(scale["perturbation"]) == ["panobinostat"] and float(scale["max_dose"][0]) == pytest.approx(200.0)
    assert sorted(a.obs["donor_id"].unique()) == ["PW030", "PW032", "PW034", "PW036", "PW040"]
    assert spec.pert_type.value == "drug"


def test_kang_muscat_donor_parsed_from_sample_id():
    o = outcome("kang_muscat_example")
    a = o.adata
    assert sorted(a.obs["donor_id"].unique()) == ["101", "107"]
    assert o.specs["kang_muscat_example"].donor_id.type == "logic"
    # cell types come from cluster_id
    assert "CD14+ Monocytes" in set(a.obs["cell_type"])
    # stim is an alias of stimulated, so both Kang files share the condition name
    assert set(a.obs["condition_name"]) == {"control", "stimulated"}


def test_perturbench_types_and_batches():
    a = outcome("norman_mcfaline_perturbench_devel").adata
    assert set(a.obs["batch_id"]) == {"norman19", "mcfaline23"}
    assert set(a.obs["cell_type"]) == {"k562", "A172", "T98G", "U87MG"}
    ctrl = a.obs[a.obs["is_control"]]
    assert ctrl.groupby("batch_id", observed=True).size().to_dict() == {"mcfaline23": 300, "norman19": 100}


def test_two_kang_files_unify_into_one_dataset():
    o = unify([real("kang_scgen_valid"), real("kang_muscat_example")])
    a = o.adata
    by = a.obs.groupby(["dataset_id", "condition_name"], observed=True).size().to_dict()
    assert by == {
        ("kang_scgen_valid", "control"): 936, ("kang_scgen_valid", "stimulated"): 1039,
        ("kang_muscat_example", "control"): 750, ("kang_muscat_example", "stimulated"): 806,
    }
    assert list(a.uns[UNS_PERTS]) == ["stimulated"]
    # genes aligned through symbols (scgen has no Ensembl); every kept gene exists in both files
    assert o.report.gene_key == "symbol"
    # 475 by the names as written; one more once both files' aliases are read as current symbols
    assert o.report.genes_common == 476 and o.report.gene_names.n_var_renamed > 0
    lost = {i.dataset_id: i.genes_lost_in_merge for i in o.report.inputs}
    assert lost == {"kang_scgen_valid": 6998 - 476, "kang_muscat_example": 1267 - 476}
    # the muscat half was normalised, the scgen half copied: both on the log1p scale now
    for did in ("kang_scgen_valid", "kang_muscat_example"):
        X = a[a.obs["dataset_id"] == did].X
        assert 3 < X.max() < 12
    # Ensembl ids from muscat became the index where known
    assert a.var_names.str.startswith("ENSG").mean() > 0.9
