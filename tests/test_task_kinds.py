"""A task kind is one object found through the registry: a new kind, registered alone, is split,
named, checked by the Judge, leak-checked and given its inner split with nothing else changed."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from harmonycell.agents.cli import main  # noqa: F401  (agents import order: cli first)
from harmonycell.agents.cli.crossval import held_out_units as cv_held_out_units
from harmonycell.agents.judge import held_out_unit, split_integrity
from harmonycell.agents.unifier import held_out_units
from harmonycell.tools.data.splits import assign_splits
from harmonycell.tools.data.taskdata import holdout_unit
from harmonycell.tools.data.validate import check_task
from harmonycell.tools.errors import InputError
from harmonycell.tools.record import atomic
from harmonycell.tools.schema import SPLIT, TaskKind
from harmonycell.tools.tasks.base import Kind, perturbed, split_controls
from harmonycell.tools.tasks.registry import KINDS, register, task_kind, unregister


class UnseenBatch(Kind):
    """Toy kind: whole batches are held out (the last batch, by name, is the test)."""

    name = "unseen-batch"
    unit = "batch"

    def split(self, obs, rng, fold=None, hold_out=None):
        batches = sorted(obs["batch_id"].astype(str).unique())
        if len(batches) < 3:
            raise InputError(f"unseen-batch needs 3 batches, found {len(batches)}", where="--task unseen-batch",
                             fix="use another task kind")
        test, val = batches[-1], batches[-2]
        b = obs["batch_id"].astype(str).to_numpy()
        split = np.where(b == test, "test", np.where(b == val, "val", "train")).astype(object)
        return split, {"held_out_unit": self.unit, "test_batches": [test], "val_batches": [val], "rule": "batches"}

    def held_out(self, info):
        return {"test": list(info["test_batches"]), "val": list(info["val_batches"])}

    def integrity(self, adata):
        pert = perturbed(adata.obs)
        b, test = pert["batch_id"].astype(str), pert[SPLIT].astype(str) == "test"
        overlap = set(b[test]) & set(b[~test])
        return ([f"held-out batches also trained: {sorted(overlap)}"] if overlap else []), "batches", len(set(b[test]))

    def leaked(self, meta, train_contexts):
        return set()

    def noun(self, crispr_only):
        return "batches"


def batch_data(n_batches: int = 4) -> ad.AnnData:
    conds = ["control", "A", "B", "A+B"] * 10
    obs = pd.DataFrame({"condition_name": conds * n_batches,
                        "batch_id": np.repeat([f"b{i}" for i in range(n_batches)], len(conds)),
                        "cell_type": "K562", "dataset_id": "d", "pert_type": "crispr"})
    obs["is_control"] = obs["condition_name"] == "control"
    obs.index = [f"c{i}" for i in range(len(obs))]
    return ad.AnnData(X=sp.csr_matrix((len(obs), 3), dtype=np.float32), obs=obs)


@pytest.fixture
def toy():
    kind = register(UnseenBatch())
    yield kind
    unregister(kind.name)


def test_the_registry_holds_every_named_kind_under_its_name():
    assert set(KINDS) == {k.value for k in TaskKind}
    for k in TaskKind:
        assert task_kind(k) is task_kind(k.value) and task_kind(k).name == k.value
    with pytest.raises(InputError, match="unknown task kind 'unseen-batch'"):
        task_kind("unseen-batch")  # not registered: refused, with the registered names


def test_a_kind_registered_alone_is_split_named_and_checked_everywhere(toy, tmp_path):
    a = assign_splits(batch_data(), "unseen-batch", seed=0)
    info = a.uns["split_info"]
    assert info["task"] == "unseen-batch" and info["held_out_unit"] == "batch"
    assert set(a.obs.loc[a.obs[SPLIT] == "test", "batch_id"]) == {"b3"}
    # the door's dry run, the Unifier's naming, the Judge's checks and the sandbox's inner unit
    check_task(a.obs.copy(), "unseen-batch")
    assert held_out_units(info) == ("batch", {"test": ["b3"], "val": ["b2"]})
    check = split_integrity(a, "unseen-batch")
    assert check.passed, check.detail
    assert held_out_unit(a, "unseen-batch") == ("batches", 1)
    assert holdout_unit(a) == "condition"
    # cross-validation's pooled units read the same record
    for name in ("fold0", "fold1"):
        atomic.write_json(tmp_path / name / "unify" / "split.json", info)
        atomic.write_json(tmp_path / name / "unify" / "unify_report.json", {"inputs": [{"pert_type": {"crispr": 1}}]})
    assert cv_held_out_units(tmp_path, ["fold0", "fold1"]) == ("batches", {"b3"})
    # the kind's integrity rule is the Judge's: a leaked batch fails
    split = a.obs[SPLIT].astype(str).to_numpy()
    split[np.flatnonzero((a.obs["batch_id"] == "b3").to_numpy())[:4]] = "train"
    a.obs[SPLIT] = pd.Categorical(split, categories=["train", "val", "test"])
    bad = split_integrity(a, "unseen-batch")
    assert not bad.passed and "b3" in bad.detail


def test_a_kind_refuses_data_it_cannot_split(toy):
    with pytest.raises(InputError, match="unseen-batch needs 3 batches"):
        assign_splits(batch_data(n_batches=2), "unseen-batch")
    with pytest.raises(InputError, match="needs the unseen-cell-context task, not unseen-batch"):
        assign_splits(batch_data(), "unseen-batch", hold_out=["K562"])


@pytest.mark.parametrize("kind", list(TaskKind))
def test_every_reader_of_the_held_out_units_agrees(kind):
    """The Unifier's names, the Judge's count and the kind's record are one definition."""
    obs = pd.DataFrame({"condition_name": (["control"] * 6 + ["A", "B", "C", "D", "A+B", "C+D", "A+C", "B+D"] * 3) * 3,
                        "cell_type": np.repeat(["T", "B", "NK"], 30), "dataset_id": "d"})
    obs["is_control"] = obs["condition_name"] == "control"
    obs["pert_type"] = np.where(obs["is_control"], "control", "crispr")
    obs.index = [f"c{i}" for i in range(len(obs))]
    a = assign_splits(ad.AnnData(X=sp.csr_matrix((len(obs), 2), dtype=np.float32), obs=obs), kind, seed=1)
    info = a.uns["split_info"]
    unit, held = held_out_units(info)
    k = task_kind(kind)
    assert unit == k.unit == info["held_out_unit"] and held["test"] == k.test_units(info)
    assert split_integrity(a, kind).passed
    assert held_out_unit(a, kind) == (k.noun(True), len(held["test"]))
    assert holdout_unit(a) == ("context" if kind is TaskKind.unseen_cell_context else "condition")


def test_split_controls_cut_in_the_units_ratios():
    obs = batch_data().obs
    split = np.full(len(obs), "train", dtype=object)
    split_controls(obs, split, {"train": 3, "val": 1}, np.random.default_rng(0))
    ctrl = split[obs["is_control"].to_numpy()]
    assert (ctrl == "val").sum() == 10 and (ctrl == "train").sum() == 30
