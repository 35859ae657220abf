"""The Unifier reads gene names through the gene database (tools/genes/rename.py): aliases and
Ensembl-only ids become current symbols, ambiguous aliases and collisions stay as written, every
rename is in the report; without the database nothing changes and the report says so."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from harmonycell.tools.data.unify import unify
from harmonycell.tools.genes.db import ENV_PATH, GeneDB
from harmonycell.tools.schema import UNS_PERTS, VAR_SYMBOL

from unify_helpers import real, small_h5ad


def norman_slice(tmp_path, n_other: int = 150):
    """A slice of the perturbench file whose MAP3K21 cells are written as older files wrote the
    gene: MLK4 (an alias in org.Hs.eg.db 3.16) for the CRISPRa cells, KIAA1804 (the file's own
    perturbation_raw) for the CRISPRi cells."""
    a = ad.read_h5ad(real("norman_mcfaline_perturbench_devel"))
    cond = a.obs["condition"].astype(str)
    target = np.flatnonzero(cond == "MAP3K21")
    rest = np.flatnonzero((cond != "MAP3K21") & ~cond.str.contains("MAP3K21"))
    rows = np.concatenate([target, np.random.default_rng(0).choice(rest, n_other, replace=False)])
    s = a[np.sort(rows)].copy()
    crispra = (s.obs["perturbation_type"].astype(str) == "CRISPRa").to_numpy()
    for col in ("condition", "perturbation"):  # the file carries the label twice
        c = s.obs[col].astype(str).to_numpy().copy()
        c[(c == "MAP3K21") & crispra] = "MLK4"
        c[(c == "MAP3K21") & ~crispra] = "KIAA1804"
        s.obs[col] = pd.Categorical(c)
    path = tmp_path / "norman_old_names.h5ad"
    s.write_h5ad(path)
    return path


def test_alias_labels_become_current_symbols_and_are_reported(tmp_path):
    with GeneDB() as db:
        kiaa = db.resolve_one("KIAA1804")
    o = unify([norman_slice(tmp_path)])
    vocab = o.adata.uns[UNS_PERTS]
    r = o.report.gene_names
    assert r.database["package_version"] and r.note == ""
    assert "MAP3K21" in vocab and "MLK4" not in vocab
    assert r.labels["MLK4"] == "MAP3K21" and r.n_labels_renamed == len(r.labels)
    conds = o.adata.obs["condition_name"].astype(str)
    if kiaa.symbol is None:  # org.Hs.eg.db 3.16 no longer lists the old symbol: left as written
        assert "KIAA1804" in vocab and "KIAA1804" not in r.labels
    else:
        assert "KIAA1804" not in vocab and r.labels["KIAA1804"] == kiaa.symbol
    assert (conds == "MAP3K21").sum() >= 1
    # the report written to disk carries the renames and their counts
    dumped = o.report.model_dump()["gene_names"]
    assert dumped["labels"]["MLK4"] == "MAP3K21" and dumped["n_labels_renamed"] == r.n_labels_renamed


def test_var_aliases_renamed_ambiguous_left_cytokine_label_untouched():
    o = unify([real("kang_muscat_example")])
    r = o.report.gene_names
    renamed = r.var["kang_muscat_example"]
    symbols = set(o.adata.var[VAR_SYMBOL].astype(str))
    assert renamed["SEP15"] == "SELENOF" and "SELENOF" in symbols and "SEP15" not in symbols
    assert r.n_var_renamed == len(renamed) > 20
    assert "HN1" in r.ambiguous and "HN1" in symbols  # names two genes: not guessed
    assert not r.labels  # 'stim' is a cytokine condition, never read as a gene


def test_ensembl_only_file_gains_symbols(tmp_path):
    a = ad.read_h5ad(real("norman_gears_subset"))
    symbols_in_file = a.var["feature_name"].astype(str)
    a.var = a.var.drop(columns=["feature_name"])
    path = tmp_path / "gears_ensembl_only.h5ad"
    a.write_h5ad(path)
    o = unify([path])
    renamed = o.report.gene_names.var["gears_ensembl_only"]
    assert all(k.startswith("ENSG") for k in renamed)
    out = o.adata.var[VAR_SYMBOL].astype(str)
    known = [e for e in o.adata.var_names if e in renamed]
    assert len(known) >= 25
    # the symbol given is the one the original file carried, read as today's symbol (a clone
    # name such as RP11-160H22.3 is no symbol of the database: its Ensembl id names it now)
    with GeneDB() as db:
        carried = {e: db.resolve_one(symbols_in_file[e]).symbol for e in known}
    carried = {e: s for e, s in carried.items() if s is not None}
    assert len(carried) >= 25 and {e: out[e] for e in carried} == carried


def test_collisions_and_mitochondrial_genes_are_left_as_written(tmp_path):
    genes = ["MT-CO2", "MLK4", "MAP3K21", "C10orf11", "ACTB", "GAPDH", "STAT1", "JAK2", "IRF1", "CD4",
             "CD8A", "MYC", "TP53", "EGFR", "KRAS", "PTEN", "RB1", "CDK4", "CCND1", "BRCA1"]
    path = small_h5ad(tmp_path / "names.h5ad", {"perturbation": ["non-targeting"] * 20 + ["JAK2"] * 20},
                      var_names=genes, n_genes=len(genes))
    o = unify([path])
    r = o.report.gene_names
    out = list(o.adata.var[VAR_SYMBOL].astype(str))
    assert "MT-CO2" in out  # not MTCO2P12, the pseudogene whose alias it is
    assert r.collisions == {"MLK4": "MAP3K21"} and "MLK4" in out  # its symbol is already a row
    assert r.var["names"] == {"C10orf11": "LRMDA"} and "LRMDA" in out


def test_without_the_database_nothing_is_renamed_and_the_report_says_why(tmp_path, monkeypatch):
    path = norman_slice(tmp_path, n_other=60)
    monkeypatch.setenv(ENV_PATH, str(tmp_path / "absent" / "org.Hs.eg.sqlite"))
    o = unify([path])
    r = o.report.gene_names
    assert "not installed" in r.note and "make setup" in r.note
    assert r.n_var_renamed == 0 and r.n_labels_renamed == 0 and not r.database
    assert "MLK4" in o.adata.uns[UNS_PERTS]
