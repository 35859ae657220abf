"""The pure parts of experiment planning: ensemble uncertainty, the builtin re-rank's diversity
and gene-set cap, gene-set files and candidate lists."""

import numpy as np
import pytest

from harmonycell.tools.errors import InputError
from harmonycell.tools.planning.ensemble import (RidgeFit, bootstrap_ensemble, epistemic_uncertainty,
                                                 fit_ridge)
from harmonycell.tools.planning.pathways import default_cap, load_pathways
from harmonycell.tools.planning.rerank import Shortlist, builtin_rerank, iterpert_select, top_uncertainty


def linear_world(n=30, d=4, g=50, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    E = rng.normal(0, 1, (n, d))
    W = rng.normal(0, 1, (d, g))
    return E, E @ W + rng.normal(0, noise, (n, g))


def test_uncertainty_is_member_variance_per_gene_averaged_over_genes():
    E, Y = linear_world()
    members = bootstrap_ensemble(E, Y, members=7, seed=3)
    X = np.random.default_rng(1).normal(0, 1, (5, E.shape[1]))
    preds = np.stack([m.predict(X) for m in members])  # (M, 5, G)
    by_hand = np.array([[preds[:, i, j].var() for j in range(Y.shape[1])] for i in range(5)]).mean(1)
    np.testing.assert_allclose(epistemic_uncertainty(members, X), by_hand, rtol=1e-10)


def test_uncertainty_grows_away_from_the_measured_perturbations():
    E, Y = linear_world()
    members = bootstrap_ensemble(E, Y, members=20, seed=0)
    direction = np.ones(E.shape[1]) / 2
    u = epistemic_uncertainty(members, np.stack([0.0 * direction, 2 * direction, 8 * direction]))
    assert u[0] < u[1] < u[2]
    assert u[2] > 10 * u[0]


def test_bootstrap_members_disagree_but_the_ensemble_is_reproducible():
    E, Y = linear_world()
    a = bootstrap_ensemble(E, Y, members=5, seed=11)
    b = bootstrap_ensemble(E, Y, members=5, seed=11)
    X = E[:3] * 3
    assert epistemic_uncertainty(a, X).min() > 0  # resampling makes members differ
    np.testing.assert_array_equal(epistemic_uncertainty(a, X), epistemic_uncertainty(b, X))
    # a ridge fit is deterministic: members differing only in a seed would all agree
    np.testing.assert_array_equal(fit_ridge(E, Y).W, fit_ridge(E, Y).W)


def test_ridge_recovers_a_linear_map():
    E, Y = linear_world(n=200, noise=0.0)
    fit = fit_ridge(E, Y, alpha=1e-6)
    assert isinstance(fit, RidgeFit)
    np.testing.assert_allclose(fit.predict(E), Y, atol=1e-3)


def unit(*v):
    v = np.array(v, float)
    return v / np.linalg.norm(v)


def test_builtin_rerank_skips_a_near_duplicate_of_a_better_pick():
    # A and A2 point the same way; B is a little less uncertain but different
    emb = np.stack([unit(1, 0, 0), unit(1, 0.01, 0), unit(0, 1, 0)])
    sl = Shortlist(["A", "A2", "B"], np.array([1.0, 0.99, 0.8]), np.array([1, 2, 3]), emb, 3)
    picks = builtin_rerank(sl, [], np.zeros((0, 3)), budget=2)
    assert [sl.genes[c.index] for c in picks] == ["A", "B"]
    assert "closest known gene A (picked above)" in picks[1].rationale
    # BALD-style would take the near-duplicate
    assert list(top_uncertainty(sl.u, 2)) == [0, 1]


def test_builtin_rerank_passes_over_a_copy_of_a_measured_gene():
    emb = np.stack([unit(1, 0, 0), unit(0, 1, 0)])
    sl = Shortlist(["COPY", "NEW"], np.array([1.0, 0.9]), np.array([1, 2]), emb, 2)
    picks = builtin_rerank(sl, ["MEASURED"], unit(1, 0, 0)[None], budget=1)
    assert sl.genes[picks[0].index] == "NEW"
    # without anything measured, the more uncertain one wins
    assert sl.genes[builtin_rerank(sl, [], np.zeros((0, 3)), budget=1)[0].index] == "COPY"


def test_iterpert_penalises_similarity_to_acquired_only():
    u = np.array([1.0, 0.95, 0.6])
    sim = np.array([0.9, 0.0, 0.0])
    assert list(iterpert_select(u, sim, 2, lam=0.5)) == [1, 2]


def orthogonal_shortlist(genes, u, sets):
    emb = np.eye(len(genes))  # all mutually dissimilar: only uncertainty and gene sets decide
    return Shortlist(genes, np.array(u, float), np.arange(1, len(genes) + 1), emb, len(genes), sets)


def test_gene_set_cap_spreads_the_picks():
    sl = orthogonal_shortlist(["P1", "P2", "P3", "Q1", "N1"], [1.0, 0.99, 0.98, 0.5, 0.4],
                              [["P"], ["P"], ["P"], ["Q"], []])
    picks = builtin_rerank(sl, [], np.zeros((0, 5)), budget=3, covered=set(), cap=1)
    chosen = [sl.genes[c.index] for c in picks]
    assert chosen == ["P1", "Q1", "N1"]  # P is full after one pick; N1 is in no set, never capped
    assert "first gene of P" in picks[0].rationale and "first gene of Q" in picks[1].rationale
    assert "in none of the given gene sets" in picks[2].rationale
    # without the cap (and gene sets) the three most uncertain P genes would be taken
    no_sets = orthogonal_shortlist(sl.genes, sl.u, None)
    assert [no_sets.genes[c.index] for c in builtin_rerank(no_sets, [], np.zeros((0, 5)), 3)] == ["P1", "P2", "P3"]


def test_gene_set_cap_is_relaxed_only_when_nothing_else_remains_and_says_so():
    sl = orthogonal_shortlist(["P1", "P2", "Q1"], [1.0, 0.9, 0.8], [["P"], ["P"], ["Q"]])
    picks = builtin_rerank(sl, [], np.zeros((0, 3)), budget=3, cap=1)
    assert [sl.genes[c.index] for c in picks] == ["P1", "Q1", "P2"]
    assert [c.capped_relaxed for c in picks] == [False, False, True]
    assert "cap was relaxed" in picks[2].rationale


def test_a_gene_set_already_measured_earns_no_coverage_bonus():
    sl = orthogonal_shortlist(["P1", "Q1"], [1.0, 0.9], [["P"], ["Q"]])
    picks = builtin_rerank(sl, [], np.zeros((0, 2)), budget=1, covered={"P"}, cap=5)
    assert sl.genes[picks[0].index] == "Q1"  # 0.9 + coverage bonus beats 1.0 in a covered set


def test_default_cap_is_an_even_share():
    assert default_cap(10, 4) == 3 and default_cap(2, 8) == 1 and default_cap(5, 0) == 5


def test_gmt_file_maps_onto_the_task_genes(tmp_path):
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("IFN\tinterferon\tstat1\tJAK2\tNOT_MEASURED\nOTHER\tx\tFOO\tBAR\nTNF\tdesc\tNFKBIA\n")
    lookup = {"STAT1": 0, "JAK2": 1, "NFKBIA": 2, "CD4": 3}
    pw = load_pathways(gmt, lookup)
    assert pw.members == {"IFN": [0, 1], "TNF": [2]} and pw.n_sets_read == 3
    assert pw.memberships([0, 3, 2]) == [["IFN"], [], ["TNF"]]


def test_gene_set_file_errors_say_where_and_what(tmp_path):
    with pytest.raises(InputError, match="gene-set file not found"):
        load_pathways(tmp_path / "missing.gmt", {"A": 0})
    gmt = tmp_path / "foreign.gmt"
    gmt.write_text("S\td\tX1\tX2\n")
    with pytest.raises(InputError, match="none of the 1 gene sets names a gene this run measures"):
        load_pathways(gmt, {"A": 0})
