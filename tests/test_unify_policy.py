"""The builtin policy on small hand-made schemas: vocabularies, delimiters, doses, donors, types."""

from __future__ import annotations

import numpy as np
import pytest

from harmonycell.tools.data.mapping import control_word, detect_delimiters
from harmonycell.tools.data.unify import unify
from unify_helpers import small_h5ad


@pytest.mark.parametrize("label, word", [
    ("ctrl", "generic"), ("Control", "generic"), ("non-targeting", "non-targeting"), ("NTC", "non-targeting"),
    ("NT", "non-targeting"), ("NTg7", "non-targeting"), ("non-targeting_2", "non-targeting"), ("DMSO", "vehicle"),
    ("vehicle (DMSO)", "vehicle"), ("unstim", "unstimulated"), ("unst", "unstimulated"), ("Vehicle", "vehicle"),
])
def test_control_vocabulary(label, word):
    assert control_word(label) == word


@pytest.mark.parametrize("label", ["TP53", "NTRK1", "NT5E", "WT1", "stim", "panobinostat", "A549_ctrl_1x", "MYC+ctrl"])
def test_not_control(label):
    assert control_word(label) is None


def test_underscore_delimiter_only_when_parts_are_labels():
    vals = ["TP53", "MYC", "TP53_MYC", "ctrl", "MYC_ctrl"]
    assert "_" in detect_delimiters(vals, set())
    assert "_" not in detect_delimiters(["A549_ctrl_1", "A549_TP53_1", "ctrl"], set())
    assert "_" not in detect_delimiters(["HLA_A", "ctrl", "TP53"], set())


def run(tmp_path, obs, name="d"):
    return unify([small_h5ad(tmp_path / f"{name}.h5ad", obs)])


def test_underscore_combos_and_control_parts(tmp_path):
    labels = ["ctrl"] * 10 + ["TP53"] * 10 + ["MYC"] * 10 + ["MYC_TP53"] * 5 + ["TP53_ctrl"] * 5
    o = run(tmp_path, {"perturbation": labels})
    got = o.adata.obs["condition_name"].value_counts().to_dict()
    assert got == {"control": 10, "TP53": 15, "MYC": 10, "MYC+TP53": 5}


def test_drug_with_mixed_units_vehicle_and_donor_in_sample(tmp_path):
    n = 40
    treatment = ["vehicle (DMSO)"] * 10 + ["0.5 uM drugx"] * 10 + ["50 nM drugx"] * 10 + ["100 nM drugy"] * 10
    compound = ["DMSO"] * 10 + ["drugx"] * 20 + ["drugy"] * 10
    sample = [f"{'DMSO' if c == 'DMSO' else c}_{d}" for c, d in zip(compound, ["P1", "P2"] * 20)]
    o = run(tmp_path, {"compound": compound, "treatment": treatment, "sample_id": sample, "cell_line": ["A549"] * n})
    spec = o.specs["d"]
    assert spec.condition_name.source_key == "compound" and spec.pert_type.value == "drug"
    assert spec.dose.type == "logic"
    a = o.adata
    scale = dict(zip(a.uns["pert_dose_scale"]["perturbation"], a.uns["pert_dose_scale"]["max_dose"]))
    assert scale == {"drugx": pytest.approx(500.0), "drugy": pytest.approx(100.0)}
    dose = a.obsm["pert_dose"].toarray()
    x = list(a.uns["pert_vocab"]).index("drugx")
    np.testing.assert_allclose(sorted(set(dose[a.obs["condition_name"] == "drugx", x])), [0.1, 1.0], rtol=1e-6)
    assert sorted(a.obs["donor_id"].unique()) == ["P1", "P2"]
    assert set(a.obs["cell_type"]) == {"A549"}


def test_cytokine_unstim(tmp_path):
    o = run(tmp_path, {"stim": ["unstim"] * 20 + ["IFNG"] * 10 + ["IL4"] * 10, "celltype": ["T"] * 40})
    assert o.report.inputs[0].pert_type == {"cytokine": 20}
    assert o.report.inputs[0].controls == 20


def test_flag_column_with_empty_labels_for_controls(tmp_path):
    target = [None] * 10 + ["TP53"] * 15 + ["MYC"] * 14 + [None]
    flag = [True] * 10 + [False] * 30
    o = run(tmp_path, {"target_gene": target, "is_control": flag})
    r = o.report.inputs[0]
    assert (r.controls, r.perturbed, r.dropped) == (10, 29, 1)  # the unlabelled perturbed cell is dropped
    assert o.specs["d"].is_control.type == "logic"


def test_guide_column_unknown_words(tmp_path):
    labels = ["NTC"] * 10 + ["TP53"] * 10 + ["unassigned"] * 3 + ["multiplet"] * 2 + ["MYC"] * 10
    o = run(tmp_path, {"guide_target": labels})
    r = o.report.inputs[0]
    assert (r.controls, r.perturbed, r.dropped, r.conditions) == (10, 20, 5, 2)
    assert r.pert_type == {"crispr": 20}
