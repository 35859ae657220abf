"""The audit and unify commands end to end, and the audit report on real files."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
from typer.testing import CliRunner

from harmonycell.agents.cli.data import app
from harmonycell.tools.data.audit import audit_h5ad
from harmonycell.tools.data.mapping import MappingSpec
from harmonycell.tools.schema import OBS_FIELDS, OBSM_DOSE, OBSM_MASK, UNS_PERTS
from unify_helpers import real


def test_audit_fingerprints_counts_and_logs():
    counts = audit_h5ad(real("papalexi_eccite_lowmoi"))
    assert counts.x.is_integer and counts.x.looks_raw_counts and counts.x.max == 278
    assert counts.n_cells == 20729 and counts.n_genes == 299
    assert counts.var.index_type == "symbol" and counts.obsm == ["grna_counts"]
    logs = audit_h5ad(real("kang_scgen_valid"))  # a pre-0.7 anndata layout
    assert logs.x.looks_log_normalised and not logs.x.is_integer and abs(logs.x.max - 6.765) < 1e-3
    assert logs.column("condition").n_unique == 2 and logs.column("condition").top_counts == {"stimulated": 1039, "control": 936}
    zhao = audit_h5ad(real("zhao_glioblastoma_panobinostat"))
    assert zhao.var.index_type == "ensembl" and zhao.var.symbol_columns[0] == "symbol"
    assert zhao.layers == ["logcounts"]
    assert 0 < zhao.x.sparsity < 1 and zhao.x.cell_sum_min == 22
    md = zhao.to_markdown()
    assert "| `treatment` |" in md and "raw counts" in md


def test_audit_streams_x_in_chunks(monkeypatch):
    """Chunked reading gives the same fingerprint as one pass (the large-file path)."""
    import harmonycell.tools.data.audit as audit_mod

    whole = audit_h5ad(real("zhao_glioblastoma_panobinostat")).x
    monkeypatch.setattr(audit_mod, "CHUNK_NNZ", 997)
    chunked = audit_h5ad(real("zhao_glioblastoma_panobinostat")).x
    assert chunked.model_dump() == whole.model_dump() or (
        abs(chunked.mean - whole.mean) < 1e-9 and chunked.cell_sum_median == whole.cell_sum_median
        and chunked.max == whole.max and chunked.sparsity == whole.sparsity)


def test_cli_audit_json_and_files(tmp_path):
    res = CliRunner().invoke(app, ["audit", str(real("norman_gears_subset")), "--json", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["n_cells"] == 50 and data["var"]["index_type"] == "ensembl"
    assert (tmp_path / "audit" / "norman_gears_subset.md").exists()
    assert json.loads((tmp_path / "audit" / "norman_gears_subset.json").read_text())["name"] == "norman_gears_subset"


def test_cli_unify_writes_canonical_outputs(tmp_path):
    out = tmp_path / "run"
    files = [str(real("kang_scgen_valid")), str(real("kang_muscat_example"))]
    res = CliRunner().invoke(app, ["unify", *files, "--out", str(out), "--task", "unseen-cell-context", "--seed", "1"])
    assert res.exit_code == 0, res.output
    a = ad.read_h5ad(out / "unified.h5ad")
    assert list(a.obs.columns) == list(OBS_FIELDS) + ["split"]
    assert a.obs["is_control"].dtype == bool
    assert set(a.obs["split"]) <= {"train", "val", "test"} and (a.obs["split"] == "test").any()
    assert a.obsm[OBSM_MASK].shape == (a.n_obs, len(a.uns[UNS_PERTS])) == a.obsm[OBSM_DOSE].shape
    assert "gene_symbol" in a.var
    report = json.loads((out / "unify_report.json").read_text())
    assert [i["dataset_id"] for i in report["inputs"]] == ["kang_scgen_valid", "kang_muscat_example"]
    assert report["task"] == "unseen-cell-context" and report["split_info"]["test_context"]
    for i in report["inputs"]:
        assert {"controls", "perturbed", "dropped", "conditions", "pert_type", "already_log", "gene_id_type", "fields"} <= set(i)
        assert i["fields"]["condition_name"]["reason"]
    for stem in ("kang_scgen_valid", "kang_muscat_example"):
        MappingSpec.model_validate_json((out / "mapping" / f"{stem}.json").read_text())
        assert (out / "audit" / f"{stem}.md").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_unify_accepts_spec_folder(tmp_path):
    """Specs written by a first run (or an LLM) are read back with --specs and reproduce it."""
    out1, out2 = tmp_path / "a", tmp_path / "b"
    f = str(real("zhao_glioblastoma_panobinostat"))
    assert CliRunner().invoke(app, ["unify", f, "--out", str(out1)]).exit_code == 0
    res = CliRunner().invoke(app, ["unify", f, "--out", str(out2), "--specs", str(out1 / "mapping")])
    assert res.exit_code == 0, res.output
    a, b = ad.read_h5ad(out1 / "unified.h5ad"), ad.read_h5ad(out2 / "unified.h5ad")
    assert (a.obs == b.obs).all().all() and np.allclose(a.X.toarray(), b.X.toarray())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zhao_glioblastoma_panobinostat.json").write_text("{not json")
    res = CliRunner().invoke(app, ["unify", f, "--out", str(tmp_path / "c"), "--specs", str(bad)])
    assert res.exit_code == 2 and "not a valid mapping spec" in res.output and not (tmp_path / "c").exists()
