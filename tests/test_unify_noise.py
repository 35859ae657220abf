"""Schema-noise variants of real and synthetic data unify to the same canonical result."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc

from harmonycell.tools.schema import OBSM_DOSE, OBSM_MASK, UNS_PERTS
from harmonycell.tools.data.unify import unify
from unify_helpers import canonical_frame, dense, real


def read(name: str) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.read_h5ad(real(name))


def same(a: ad.AnnData, b: ad.AnnData) -> None:
    pd.testing.assert_frame_equal(canonical_frame(a), canonical_frame(b))
    assert list(a.var_names) == list(b.var_names)
    assert list(a.var["gene_symbol"]) == list(b.var["gene_symbol"])
    assert list(a.uns[UNS_PERTS]) == list(b.uns[UNS_PERTS])
    np.testing.assert_allclose(dense(a.X), dense(b.X), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(dense(a.obsm[OBSM_MASK]), dense(b.obsm[OBSM_MASK]))
    np.testing.assert_allclose(dense(a.obsm[OBSM_DOSE]), dense(b.obsm[OBSM_DOSE]))


def write(a: ad.AnnData, path):
    a.write_h5ad(path)
    return path


# --- zhao: drug, dose in text, raw counts, Ensembl index --------------------------------------
def zhao_renamed(a):
    a.obs = a.obs.rename(columns={"condition": "drug", "patient_id": "patient", "sample_id": "batch",
                                  "treatment": "dose_text"})
    return a


def zhao_aliased(a):
    a.obs["condition"] = a.obs["condition"].astype(str).replace({"ctrl": "DMSO"})
    return a


def zhao_logs(a):
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    a.layers = {}
    return a


def zhao_symbols(a):
    a.var["gene_ids"] = a.var_names.astype(str)
    a.var_names = a.var["symbol"].astype(str).to_numpy()
    a.var = a.var.drop(columns=["symbol", "gene_id"])
    return a


@pytest.fixture(scope="module")
def zhao_base():
    return unify([real("zhao_glioblastoma_panobinostat")]).adata


@pytest.mark.parametrize("variant", [zhao_renamed, zhao_aliased, zhao_logs, zhao_symbols],
                         ids=lambda f: f.__name__)
def test_zhao_variants_unify_identically(tmp_path, zhao_base, variant):
    a = variant(read("zhao_glioblastoma_panobinostat"))
    p = write(a, tmp_path / "zhao_glioblastoma_panobinostat.h5ad")  # same stem: same dataset_id
    o = unify([p])
    same(zhao_base, o.adata)
    if variant is zhao_logs:
        assert o.report.inputs[0].already_log and not o.report.inputs[0].normalised
    else:
        assert o.report.inputs[0].normalised


# --- papalexi: crispr labels -----------------------------------------------------------------
@pytest.fixture(scope="module")
def papalexi_small(tmp_path_factory):
    a = read("papalexi_eccite_lowmoi")
    keep = np.random.default_rng(0).choice(a.n_obs, 3000, replace=False)
    a = a[np.sort(keep)].copy()
    a.obsm = {}
    p = tmp_path_factory.mktemp("pap") / "papalexi.h5ad"
    a.write_h5ad(p)
    return a, p, unify([p]).adata


def relabel(a, fn, column="perturbation"):
    a = a.copy()
    labels = a.obs["perturbation"].astype(str)
    new = fn(labels)
    a.obs = a.obs.drop(columns=["perturbation", "grna"])
    a.obs[column] = new.to_numpy()
    return a


LABELS = {
    "ntc_renamed": (lambda s: s.replace({"non-targeting": "NTC"}), "guide_target"),
    "gears_style": (lambda s: s.map(lambda v: "ctrl" if v == "non-targeting" else f"{v}+ctrl"), "condition"),
    "second_guide_nt": (lambda s: s.map(lambda v: v if v == "non-targeting" else f"{v};non-targeting"), "perturbation"),
    "lowercase_control": (lambda s: s.replace({"non-targeting": "Non-Targeting"}), "target_gene"),
}


@pytest.mark.parametrize("variant", sorted(LABELS))
def test_papalexi_label_variants_unify_identically(tmp_path, papalexi_small, variant):
    a, _, base = papalexi_small
    fn, col = LABELS[variant]
    p = write(relabel(a, fn, col), tmp_path / "papalexi.h5ad")
    same(base, unify([p]).adata)


def test_unknown_labels_dropped_and_counted(tmp_path, papalexi_small):
    a, _, base = papalexi_small
    labels = a.obs["perturbation"].astype(object).copy()
    labels.iloc[:40] = np.nan
    labels.iloc[40:50] = "unassigned"
    b = a.copy()
    b.obs["perturbation"] = labels.to_numpy()
    o = unify([write(b, tmp_path / "papalexi.h5ad")])
    r = o.report.inputs[0]
    assert r.dropped == 50 and sum(r.dropped_reasons.values()) == 50
    assert o.adata.n_obs == a.n_obs - 50
    pd.testing.assert_frame_equal(canonical_frame(o.adata), canonical_frame(base[50:]))


# --- the demo's two synthetic schemas ----------------------------------------------------------
def test_synthetic_labs_unify_with_no_hints(synthetic_dir):
    import anndata as ad

    a_path, b_path = synthetic_dir / "labA_counts.h5ad", synthetic_dir / "labB_lognorm.h5ad"
    raw_a, raw_b = ad.read_h5ad(a_path), ad.read_h5ad(b_path)
    o = unify([a_path, b_path], task="unseen-perturbation", seed=0)
    by = {r.dataset_id: r for r in o.report.inputs}
    ra, rb = by["labA_counts"], by["labB_lognorm"]
    na = int(raw_a.obs["guide_target"].isna().sum())
    assert ra.dropped == na and na > 0
    assert ra.controls == int((raw_a.obs["guide_target"] == "non-targeting").sum())
    assert rb.controls == int((raw_b.obs["condition"] == "ctrl").sum())
    assert ra.normalised and rb.already_log
    obs = o.adata.obs
    conds = {d: set(obs.loc[obs["dataset_id"] == d, "condition_name"].astype(str)) - {"control"}
             for d in ("labA_counts", "labB_lognorm")}
    raw_names = {c.replace(";", "+") for c in raw_a.obs["guide_target"].dropna().astype(str)} - {"non-targeting"}
    assert conds["labA_counts"] == {"+".join(sorted(c.split("+"))) for c in raw_names}
    # 'SG0011;SG0242' (lab A) and 'SG0011+SG0242' (lab B) are one condition; B's 'A+ctrl' is 'A'
    assert "SG0011+SG0242" in conds["labA_counts"] & conds["labB_lognorm"]
    assert "SG0003" in conds["labB_lognorm"]
    assert len(conds["labA_counts"] & conds["labB_lognorm"]) >= 20
    assert o.adata.var_names.str.startswith("ENSG").all()  # Ensembl from lab B, aligned via symbols
    assert set(o.adata.obs["split"]) == {"train", "val", "test"}
