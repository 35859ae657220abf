"""Seeded splits for the three task kinds."""

from __future__ import annotations

import numpy as np
import pytest

from harmonycell.tools.errors import InputError
from harmonycell.tools.data.splits import assign_splits
from harmonycell.tools.data.unify import unify
from unify_helpers import real


@pytest.fixture(scope="module")
def perturbench():
    return unify([real("norman_mcfaline_perturbench_devel")]).adata


@pytest.fixture(scope="module")
def papalexi():
    return unify([real("papalexi_eccite_lowmoi")]).adata


def conds_of(a, split):
    o = a.obs
    return set(o.loc[(o["split"] == split) & ~o["is_control"], "condition_name"].astype(str))


def test_unseen_perturbation_ratios_and_controls(papalexi):
    a = assign_splits(papalexi.copy(), "unseen-perturbation", seed=3)
    tr, va, te = (conds_of(a, s) for s in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(tr | va | te) == 25
    assert len(te) == 5  # 20% of 25 held out
    assert 1 <= len(va) <= 4  # carved from the 20 training conditions
    ctrl = a.obs[a.obs["is_control"]]
    frac = ctrl["split"].value_counts(normalize=True)
    for s, n in (("train", len(tr)), ("val", len(va)), ("test", len(te))):
        assert frac[s] == pytest.approx(n / 25, abs=0.01)
    assert a.uns["split_info"]["test_conditions"] == sorted(te)


def test_seeded_and_deterministic(papalexi):
    a = assign_splits(papalexi.copy(), "unseen-perturbation", seed=1)
    b = assign_splits(papalexi.copy(), "unseen-perturbation", seed=1)
    c = assign_splits(papalexi.copy(), "unseen-perturbation", seed=2)
    assert (a.obs["split"] == b.obs["split"]).all()
    assert conds_of(a, "test") != conds_of(c, "test") or (a.obs["split"] != c.obs["split"]).any()


def test_unseen_cell_context_holds_out_one_whole_context(perturbench):
    a = assign_splits(perturbench.copy(), "unseen-cell-context", seed=0)
    ctx = a.obs["dataset_id"].astype(str) + "|" + a.obs["cell_type"].astype(str)
    test_ctx = set(ctx[a.obs["split"] == "test"])
    assert len(test_ctx) == 1
    held = test_ctx.pop()
    assert held == a.uns["split_info"]["test_context"]
    assert (a.obs.loc[ctx == held, "split"] == "test").all()
    assert not (a.obs.loc[ctx != held, "split"] == "test").any()
    # the held-out context's perturbations are seen in other contexts
    assert conds_of(a, "test") & (conds_of(a, "train") | conds_of(a, "val"))
    # validation asks the same question: another whole context, never seen in training
    val_ctx = set(ctx[a.obs["split"] == "val"])
    assert val_ctx == {a.uns["split_info"]["val_context"]} and held not in val_ctx
    assert (a.obs.loc[ctx.isin(val_ctx), "split"] == "val").all()
    assert conds_of(a, "val") & conds_of(a, "train")


def test_unseen_combination_keeps_singles_in_train(perturbench):
    a = assign_splits(perturbench.copy(), "unseen-combination", seed=0)
    te, tr = conds_of(a, "test"), conds_of(a, "train")
    assert te and all("+" in c for c in te)
    for combo in te:
        assert all(p in tr for p in combo.split("+"))
    assert not (te & tr)


def test_split_errors_are_specific(tmp_path):
    zhao = unify([real("zhao_glioblastoma_panobinostat")]).adata
    with pytest.raises(InputError, match="at least 3 perturbations"):
        assign_splits(zhao.copy(), "unseen-perturbation")
    with pytest.raises(InputError, match="at least 2 contexts"):
        assign_splits(zhao.copy(), "unseen-cell-context")
    with pytest.raises(InputError, match="unseen-combination needs"):
        assign_splits(zhao.copy(), "unseen-combination")
    with pytest.raises(InputError, match="unknown task kind"):
        assign_splits(zhao.copy(), "unseen-everything")


def test_unify_with_task_sets_split(tmp_path):
    o = unify([real("norman_gears_subset")], task="unseen-combination", seed=0)
    assert set(o.adata.obs["split"].unique()) <= {"train", "val", "test"}
    assert o.report.split_info["task"] == "unseen-combination"
    assert np.all(o.adata.obs["split"].notna())
