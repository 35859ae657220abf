"""Labels read by their words: every negative-control class screens use, guide-level labels pooled
to their gene, and a proposal (not a refusal) when no label is a known control. The labels are
the real Papalexi screen's, rewritten in other conventions."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from harmonycell.tools.data.labels import decide, gene_lookup, read_labels, tokens
from harmonycell.tools.data.unify import unify
from harmonycell.tools.errors import SpecError
from harmonycell.tools.genes.db import ENV_PATH, GeneDB
from unify_helpers import real

# one spelling per class that no rule names whole: the classes are read from words
CONTROL_SPELLINGS = {
    "non-targeting": ["NonTargetingHuman_g07", "nontargetingMouse1", "sgNTC_3", "Non-Targeting Control 12"],
    "scrambled": ["SCRAMBLED-2", "scr_3", "shScramble.1"],
    "safe-harbour": ["AAVS1_sg2", "sgRosa26_1", "SafeHarbor_AAVS1-3"],
    "reporter": ["LacZ_g1", "EGFP", "Luciferase-sg1", "mCherry_sg2"],
    "empty-vector": ["empty_vector", "pLKO_empty", "EmptyVector-2"],
    "vehicle": ["vehicle (DMSO)", "DMSO_0.1pct", "EtOH", "DMSO 0.1%", "EtOH 0.5%", "10uM Vehicle"],
    "untreated": ["Untreated", "mock", "no_treatment"],
    "unstimulated": ["unstim", "Unstimulated_rep2", "resting"],
}


@pytest.fixture(scope="module")
def papalexi(real_data):
    a = ad.read_h5ad(real_data / "papalexi_eccite_lowmoi.h5ad", backed="r")
    counts = a.obs["perturbation"].astype(str).value_counts()
    return {str(k): int(v) for k, v in counts.items()}, list(a.var_names.astype(str))


@pytest.fixture(scope="module")
def is_gene(papalexi):
    with GeneDB() as db:
        yield gene_lookup(papalexi[1], db)


def test_tokens_keep_genes_whole():
    assert tokens("NonTargetingHuman_g07") == ["non", "targeting", "human", "g07"]
    assert tokens("NTCGuide") == ["ntc", "guide"]
    assert tokens("MAP3K21") == ["map3k21"] and tokens("NT5E-2") == ["nt5e", "2"]


@pytest.mark.parametrize("cls", sorted(CONTROL_SPELLINGS))
def test_each_control_class_from_the_real_screen(papalexi, is_gene, cls):
    """The screen's non-targeting cells relabelled in each class's convention, its targets written
    per guide: the controls are exactly the relabelled cells, the targets pool to their genes."""
    counts, _ = papalexi
    genes = sorted(k for k in counts if k != "non-targeting")
    spellings = CONTROL_SPELLINGS[cls]
    relabelled: dict[str, int] = {}
    for i, spelling in enumerate(spellings):  # the controls spread over the class's spellings
        relabelled[spelling] = counts["non-targeting"] // len(spellings) + (i == 0) * (counts["non-targeting"] % len(spellings))
    for g in genes:  # two guides per gene, in a guide-level convention
        relabelled[f"sg{g}-1"] = counts[g] // 2
        relabelled[f"sg{g}-2"] = counts[g] - counts[g] // 2
    reading = read_labels(relabelled, is_gene)
    assert sorted(reading.controls) == sorted(spellings)
    assert {reading.decisions[s].control_class for s in spellings} == {cls}
    current = {g: is_gene(g) for g in genes}
    assert current["MARCH8"] == "MARCHF8"  # the screen's old symbol, renamed since
    assert sorted(set(reading.targets.values())) == sorted(current.values())
    assert reading.guides_per_gene == {current[g]: 2 for g in genes}
    assert sum(relabelled[s] for s in reading.controls) == counts["non-targeting"]
    assert reading.proposed_control is None
    for s in spellings:  # the report can say which words decided
        assert cls in reading.decisions[s].rule


def test_gene_names_that_look_like_control_words_stay_genes(is_gene):
    for gene in ("WT1", "NT5E", "CD86", "STAT1"):
        d = decide(gene, is_gene)
        assert (d.kind, d.gene) == ("target", gene), d
    # a current symbol written as an older alias, per guide, pools to the current symbol
    d = decide("MLK4_sg1", is_gene)
    assert (d.kind, d.gene, d.guide) == ("target", "MAP3K21", "sg1")


def test_no_known_control_is_proposed_not_refused(papalexi, is_gene):
    counts, _ = papalexi
    relabelled = {("Blank" if k == "non-targeting" else k): v for k, v in counts.items()}
    reading = read_labels(relabelled, is_gene)
    assert reading.controls == [] and reading.proposed_control == "Blank"
    assert "--control" in reading.proposal_reason and str(counts["non-targeting"]) in reading.proposal_reason
    # 'no guide detected' is an unknown perturbation, never a control
    assert decide("no guide", is_gene).kind == "unknown"


# --- the Unifier, end to end, on the real screen rewritten in each class's convention ------------
N_CELLS = 900
# spellings per class as screens write them, several per class in one file
UNIFY_SPELLINGS = {
    "non-targeting": ["NonTargetingHs_g2", "non_targeting_human-3", "NTC_sg1"],
    "scrambled": ["Scrambled_g1", "scr-2"],
    "safe-harbour": ["AAVS1_sg1", "ROSA26-g2", "SafeHarbor_3"],
    "reporter": ["LacZ_g1", "GFP-sg2", "Luciferase_3"],
    "empty-vector": ["EmptyVector", "empty_vector_2"],
}


@pytest.fixture(scope="module")
def pap_small():
    a = ad.read_h5ad(real("papalexi_eccite_lowmoi"))
    a = a[np.sort(np.random.default_rng(1).choice(a.n_obs, N_CELLS, replace=False))].copy()
    return ad.AnnData(X=sp.csr_matrix(a.X, dtype=np.float32), obs=a.obs[["perturbation", "grna"]].copy(),
                      var=pd.DataFrame(index=a.var_names.astype(str)))


def guide_level_labels(obs: pd.DataFrame, spellings: list[str]) -> pd.Series:
    """Per-guide labels (``sgSTAT1-2``) from the screen's own guides; its non-targeting cells
    spread over the class's spellings."""
    num = obs["grna"].astype(str).str.extract(r"(\d+)$", expand=False).astype(int)
    out = [f"sg{g}-{n}" for g, n in zip(obs["perturbation"].astype(str), num)]
    ctl = np.flatnonzero(obs["perturbation"].astype(str).to_numpy() == "non-targeting")
    for k, i in enumerate(ctl):
        out[i] = spellings[k % len(spellings)]
    return pd.Series(out, index=obs.index, dtype=object)


@pytest.mark.parametrize("cls", sorted(UNIFY_SPELLINGS))
def test_unify_reads_each_crispr_control_class(pap_small, tmp_path, cls):
    a = pap_small.copy()
    a.obs = pd.DataFrame({"guide": guide_level_labels(pap_small.obs, UNIFY_SPELLINGS[cls])}, index=a.obs_names)
    path = tmp_path / f"{cls}.h5ad"
    a.write_h5ad(path)
    o = unify([path])
    r = o.report.inputs[0]
    truth = pap_small.obs["perturbation"].astype(str)
    assert r.controls == int((truth == "non-targeting").sum())
    got = o.adata.obs
    # the guides pooled to the screen's genes, cell for cell, under today's symbols (the Unifier
    # renames a retired one through gene knowledge and reports it: MARCH8 is MARCHF8)
    renamed = o.report.gene_names.labels
    assert renamed.get("MARCH8") == "MARCHF8"
    assert (got.loc[~got["is_control"], "condition_name"].astype(str).to_numpy()
            == truth[truth != "non-targeting"].map(lambda g: renamed.get(g, g)).to_numpy()).all()
    assert o.specs[r.dataset_id].pert_type.value == "crispr"
    notes = {n.label: n for n in r.labels}
    for sp_ in UNIFY_SPELLINGS[cls]:  # every decision in the report, with its tokens and rule
        n = notes[sp_]
        assert n.role == "control" and n.control_class == cls and cls in n.rule and n.tokens
    guide = next(n for n in r.labels if n.role == "perturbation")
    assert guide.gene and guide.guide and "guide suffix" in guide.rule


@pytest.mark.parametrize("name, relabel, pert_type", [
    ("zhao_glioblastoma_panobinostat", {"ctrl": "Vehicle_DMSO_0.1pct"}, "drug"),
    ("zhao_glioblastoma_panobinostat", {"ctrl": "untreated"}, "drug"),
    ("kang_scgen_valid", {"control": "Unstimulated"}, "cytokine"),
    ("kang_scgen_valid", {"control": "mock"}, "cytokine"),
])
def test_unify_reads_vehicle_untreated_mock_unstimulated(tmp_path, name, relabel, pert_type):
    a = ad.read_h5ad(real(name))
    cond = a.obs["condition"].astype(str)
    keep = ["condition"] + [c for c in ("cell_type", "patient_id") if c in a.obs]
    b = ad.AnnData(X=a.X, obs=a.obs[keep].copy(), var=a.var.copy())
    b.obs["condition"] = cond.replace(relabel).to_numpy()
    b.write_h5ad(tmp_path / "x.h5ad")
    o = unify([tmp_path / "x.h5ad"])
    r = o.report.inputs[0]
    assert r.controls == int((cond == next(iter(relabel))).sum()) and r.perturbed == int((cond != next(iter(relabel))).sum())
    assert r.pert_type == {pert_type: r.perturbed}
    [ctl] = [n for n in r.labels if n.role == "control"]
    assert ctl.label == next(iter(relabel.values())) and ctl.kind == "control"


def test_unify_proposes_a_control_when_none_is_known(pap_small, tmp_path):
    a = pap_small.copy()
    a.obs = pd.DataFrame({"perturbation": pap_small.obs["perturbation"].astype(str).replace(
        {"non-targeting": "Blank"}).to_numpy()}, index=a.obs_names)
    a.write_h5ad(tmp_path / "blank.h5ad")
    o = unify([tmp_path / "blank.h5ad"])
    r = o.report.inputs[0]
    assert r.controls == int((pap_small.obs["perturbation"] == "non-targeting").sum())
    why = r.fields["condition_name"].reason
    assert "PROPOSED control" in why and "'Blank'" in why and "--control LABEL" in why
    assert r.fields["condition_name"].confidence <= 0.5


def test_refusal_lists_the_labels_and_names_the_option_which_then_works(pap_small, tmp_path):
    a = pap_small.copy()
    a.obs = pd.DataFrame({"perturbation": pap_small.obs["perturbation"].astype(str).replace(
        {"non-targeting": "TP53"}).to_numpy()}, index=a.obs_names)
    src = tmp_path / "genes_only.h5ad"
    a.write_h5ad(src)
    with pytest.raises(SpecError) as e:
        unify([src])
    msg = e.value.one_line()
    assert "zero control cells" in msg and "TP53 (" in msg and "gene TP53" in msg and "--control LABEL" in msg
    p = subprocess.run([sys.executable, "-m", "harmonycell.agents.cli", "unify", str(src), "--out",
                        str(tmp_path / "out"), "--control", "TP53"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    u = ad.read_h5ad(tmp_path / "out" / "unified.h5ad")
    assert int(u.obs["is_control"].sum()) == int((pap_small.obs["perturbation"] == "non-targeting").sum())
    p = subprocess.run([sys.executable, "-m", "harmonycell.agents.cli", "unify", str(src), "--out",
                        str(tmp_path / "out2"), "--control", "NoSuchLabel"], capture_output=True, text=True)
    assert p.returncode == 2 and "NoSuchLabel" in p.stderr and "perturbation" in p.stderr


def test_without_the_gene_database_the_files_own_genes_decide(pap_small, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_PATH, str(tmp_path / "absent.sqlite"))
    a = pap_small.copy()
    a.obs = pd.DataFrame({"guide": guide_level_labels(pap_small.obs, ["NonTargetingHs_g2"])}, index=a.obs_names)
    a.write_h5ad(tmp_path / "x.h5ad")
    o = unify([tmp_path / "x.h5ad"])
    r = o.report.inputs[0]
    assert r.controls == int((pap_small.obs["perturbation"] == "non-targeting").sum())
    in_var = {n.gene for n in r.labels if n.kind == "target"}
    assert in_var and in_var <= set(pap_small.var_names)  # only genes the file measures are known
