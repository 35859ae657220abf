"""Labels read by their words: every negative-control class screens use, guide-level labels pooled
to their gene, and a proposal (not a refusal) when no label is a known control. The labels are
the real Papalexi screen's, rewritten in other conventions."""

from __future__ import annotations

import anndata as ad
import pytest

from harmonycell.tools.data.labels import decide, gene_lookup, read_labels, tokens
from harmonycell.tools.genes.db import GeneDB

# one spelling per class that no rule names whole: the classes are read from words
CONTROL_SPELLINGS = {
    "non-targeting": ["NonTargetingHuman_g07", "nontargetingMouse1", "sgNTC_3", "Non-Targeting Control 12"],
    "scrambled": ["SCRAMBLED-2", "scr_3", "shScramble.1"],
    "safe-harbour": ["AAVS1_sg2", "sgRosa26_1", "SafeHarbor_AAVS1-3"],
    "reporter": ["LacZ_g1", "EGFP", "Luciferase-sg1", "mCherry_sg2"],
    "empty-vector": ["empty_vector", "pLKO_empty", "EmptyVector-2"],
    "vehicle": ["vehicle (DMSO)", "DMSO_0.1pct", "EtOH"],
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
    for i, sp in enumerate(spellings):  # the controls spread over the class's spellings
        relabelled[sp] = counts["non-targeting"] // len(spellings) + (i == 0) * (counts["non-targeting"] % len(spellings))
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
