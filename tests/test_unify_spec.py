"""MappingSpec: exported schema, prompt, and validation/repair of specs handed in by a caller."""

from __future__ import annotations

import json

import pytest

from harmonycell.tools.data.audit import audit_h5ad, read_obs_var_backed
from harmonycell.tools.errors import SpecError
from harmonycell.tools.data.mapping import (
    SCHEMA_PATH,
    FieldMapping,
    MappingSpec,
    infer_mapping,
    json_schema_text,
    render_prompt,
)
from harmonycell.tools.data.unify import unify
from unify_helpers import canonical_frame, real

ZHAO = "zhao_glioblastoma_panobinostat"


def test_exported_schema_is_current():
    """tools/mapping_spec.schema.json must be regenerated (export_json_schema) when the model changes."""
    assert SCHEMA_PATH.read_text() == json_schema_text()
    schema = json.loads(SCHEMA_PATH.read_text())
    assert {"condition_name", "is_control", "dose", "is_already_log1p"} <= set(schema["properties"])


def test_prompt_renders_with_audit_schema_and_proposal():
    a = audit_h5ad(real(ZHAO))
    text = render_prompt(a, infer_mapping(a, read_obs_var_backed(a.path and real(ZHAO))[0]))
    assert "0.2 uM panobinostat" in text and '"condition_name"' in text and "logic" in text
    assert "{dataset_id}" not in text and "deterministic policy proposes" in text


def llm_like_spec(**changes) -> MappingSpec:
    """A spec as an LLM might write it, from scratch."""
    base = dict(
        dataset_id=ZHAO, policy="llm",
        condition_name=FieldMapping(type="direct", source_key="condition", confidence=0.9, reason="labels"),
        is_control=FieldMapping(type="logic", expression="obs['treatment'].str.contains('DMSO')", reason="vehicle"),
        pert_type=FieldMapping(type="constant", value="drug"),
        donor_id=FieldMapping(type="direct", source_key="patient_id"),
        batch_id=FieldMapping(type="direct", source_key="sample_id"),
        dose=FieldMapping(type="logic", expression="obs['treatment'].str.extract('([0-9.]+) uM').astype('float') * 1000"),
        control_labels=["ctrl"], is_already_log1p=False, normalization_required=True,
        var_index_type="ensembl", gene_symbol_column="symbol",
    )
    base.update(changes)
    return MappingSpec(**base)


@pytest.fixture(scope="module")
def builtin_zhao():
    return unify([real(ZHAO)])


def test_valid_llm_spec_is_used_as_given(builtin_zhao):
    o = unify([real(ZHAO)], specs={ZHAO: llm_like_spec()})
    spec = o.specs[ZHAO]
    assert spec.policy == "llm" and o.report.inputs[0].repairs == []
    assert spec.is_control.expression == "obs['treatment'].str.contains('DMSO')"
    assert canonical_frame(o.adata).equals(canonical_frame(builtin_zhao.adata))


@pytest.mark.parametrize("bad, field", [
    (dict(donor_id=FieldMapping(type="direct", source_key="donor")), "donor_id"),  # no such column
    (dict(is_control=FieldMapping(type="logic", expression="__import__('os').getcwd()")), "is_control"),
    (dict(dose=FieldMapping(type="direct", source_key="treatment")), "dose"),  # text, not a number
    (dict(is_control=FieldMapping(type="direct", source_key="patient_id")), "is_control"),  # not boolean
    (dict(control_labels=["vehicle"], is_control=FieldMapping(type="null")), "condition_name"),  # zero controls
    (dict(gene_symbol_column="gene_name"), "var_index_type"),
    (dict(normalization_required=False, is_already_log1p=True), "normalization_required"),
])
def test_failing_field_is_repaired_by_builtin(builtin_zhao, bad, field):
    o = unify([real(ZHAO)], specs={ZHAO: llm_like_spec(**bad)})
    rep = o.report.inputs[0]
    assert rep.repairs and rep.repairs[0].field.startswith(field)
    assert o.specs[ZHAO].policy in ("llm+builtin-repair", "llm")
    assert canonical_frame(o.adata).equals(canonical_frame(builtin_zhao.adata))
    assert o.adata.X.max() == pytest.approx(builtin_zhao.adata.X.max())


def test_unrepairable_spec_is_rejected(tmp_path):
    """A file the builtin policy cannot read either: the handed-in spec's failure is reported."""
    from unify_helpers import small_h5ad

    p = small_h5ad(tmp_path / "odd.h5ad", {"arm": ["A"] * 10 + ["B"] * 10})
    spec = MappingSpec(dataset_id="odd", condition_name=FieldMapping(type="direct", source_key="arm"),
                       control_labels=["ctrl"], is_already_log1p=False, normalization_required=True)
    with pytest.raises(SpecError, match="zero control cells"):
        unify([p], specs={"odd": spec})
    # the caller's spec that names the controls is accepted
    ok = spec.model_copy(update={"control_labels": ["A"]})
    o = unify([p], specs={"odd": ok})
    assert o.report.inputs[0].controls == 10 and o.report.inputs[0].perturbed == 10
