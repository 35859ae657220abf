"""Offline gene knowledge (org.Hs.eg.db, installed by `make setup`): names resolved to current
symbols, a GO embedding that puts functionally related genes together, pathway membership, and
one clear error when the database is absent."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from harmonycell.tools.genes.db import GeneDB, GeneKnowledgeMissing
from harmonycell.tools.genes.features import go_embedding, knowledge_features, pathway_membership


@pytest.fixture(scope="module")
def db():
    with GeneDB() as d:  # CI installs it: a missing database fails here, it is not skipped
        yield d


def test_names_resolve_to_current_symbols(db):
    r = db.resolve(["MAP3K21", "MLK4", "ENSG00000143674.7", "p53", "Myc", "SEPT2", "LacZ"])
    assert (r["MAP3K21"].symbol, r["MAP3K21"].status) == ("MAP3K21", "symbol")
    assert (r["MLK4"].symbol, r["MLK4"].status, r["MLK4"].renamed) == ("MAP3K21", "alias", True)
    assert (r["ENSG00000143674.7"].symbol, r["ENSG00000143674.7"].status) == ("MAP3K21", "ensembl")
    assert r["p53"].symbol == "TP53"
    assert (r["Myc"].symbol, r["Myc"].status) == ("MYC", "symbol")  # case, not a rename
    # an alias naming two current genes is not guessed
    assert r["SEPT2"].symbol is None and r["SEPT2"].status == "ambiguous"
    assert set(r["SEPT2"].candidates) >= {"SEPTIN2"}
    assert r["LacZ"].status == "unknown" and not db.is_gene("LacZ")  # a reporter, not a human gene


def test_real_screens_genes_are_known(db, real_data):
    """Every gene the Papalexi screen perturbs, and every gene in the Norman/McFaline single
    conditions, is a current symbol or resolves to one."""
    pap = ad.read_h5ad(real_data / "papalexi_eccite_lowmoi.h5ad", backed="r")
    genes = {g for g in pap.obs["perturbation"].astype(str).unique() if g != "non-targeting"}
    assert len(genes) == 25
    res = db.resolve(genes)
    assert all(x.symbol is not None for x in res.values()), {g: x.status for g, x in res.items() if not x.symbol}
    nor = ad.read_h5ad(real_data / "norman_mcfaline_perturbench_devel.h5ad", backed="r")
    singles = {c for c in nor.obs["condition"].astype(str).unique() if "+" not in c and c != "control"}
    unknown = sorted(g for g, x in db.resolve(singles).items() if x.symbol is None)
    assert not unknown, unknown
    assert db.resolve_one("MAP3K21").status == "symbol"


def test_go_embedding_puts_related_genes_together(db):
    emb = go_embedding(db)
    assert emb.vectors.shape[1] == 64 and len(emb.genes) > 15000
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, rtol=1e-4)
    near = [g for g, _ in emb.nearest("JAK2", ["JAK1", "TYK2", "ACTB", "GAPDH", "RPL13", "COL1A1"], k=2)]
    assert set(near) == {"JAK1", "TYK2"}  # the JAK kinases, not housekeeping or matrix genes
    m, missing = emb.matrix(["STAT1", "NOT_A_GENE_XYZ"])
    assert missing == ["NOT_A_GENE_XYZ"] and not m[1].any() and m[0].any()
    again = go_embedding(db)  # from the cache: the same vectors
    np.testing.assert_array_equal(again.vectors, emb.vectors)


def test_pathway_membership(db):
    m, paths = pathway_membership(db, ["JAK2", "STAT1", "NOT_A_GENE_XYZ"])
    jak_stat = paths.index("04630")  # KEGG's Jak-STAT signaling pathway
    assert m[0, jak_stat] == 1 and m[1, jak_stat] == 1 and not m[2].any()


def test_missing_database_is_one_clear_error(tmp_path):
    with pytest.raises(GeneKnowledgeMissing) as e:
        GeneDB(tmp_path / "absent.sqlite")
    msg = str(e.value)
    assert "absent.sqlite" in msg and "make setup" in msg and "\n" not in msg
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database")
    with pytest.raises(GeneKnowledgeMissing, match="cannot read"):
        GeneDB(bad)


def test_knowledge_features_of_a_vocabulary_say_what_they_could_not_read(db):
    """Aliases are read as their current gene; a drug and a reporter keep zero rows and are named."""
    k = knowledge_features(["JAK2", "MLK4", "DMSO", "LacZ"], db)
    assert k.symbols == {"JAK2": "JAK2", "MLK4": "MAP3K21"} and k.unknown == ["DMSO", "LacZ"]
    assert k.matrix[:2].any(axis=1).all() and not k.matrix[2:].any()
    emb = go_embedding(db)
    np.testing.assert_array_equal(k.matrix[1], emb.get("MAP3K21"))
