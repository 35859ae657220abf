"""A task kind is one object found through the registry: a new kind, registered alone, is split,
named, checked by the Judge, leak-checked, given its inner split, accepted by a run's configuration,
read from a person's words and offered by the chat's task question, with nothing else changed; and
no module outside ``tools/tasks`` spells a kind's name."""

from __future__ import annotations

import io
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from rich.console import Console

from harmonycell.agents.cli import main  # noqa: F401  (agents import order: cli first)
from harmonycell.agents.cli.chat import Conversation, ask_task, task_question
from harmonycell.agents.cli.crossval import held_out_units as cv_held_out_units
from harmonycell.agents.judge import held_out_unit, split_integrity
from harmonycell.agents.policies.intent import builtin_intent, read_task
from harmonycell.agents.unifier import held_out_units
from harmonycell.tools.data.splits import assign_splits
from harmonycell.tools.data.unify import unify
from harmonycell.tools.data.taskdata import holdout_unit
from harmonycell.tools.data.validate import check_task
from harmonycell.tools.errors import InputError
from harmonycell.tools.record import atomic
from harmonycell.tools.record.runfolder import RunConfig, create_run
from harmonycell.tools.schema import SPLIT
from harmonycell.tools.tasks.base import Kind, perturbed, split_controls
from harmonycell.tools.tasks.registry import DEFAULT_KIND, KINDS, register, task_kind, unregister
from unify_helpers import real

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN = ("unseen-perturbation", "unseen-cell-context", "unseen-combination")  # in the order a person reads them


class UnseenBatch(Kind):
    """Toy kind: whole batches are held out (the last batch, by name, is the test)."""

    name = "unseen-batch"
    unit = "batch"
    description = "responses in a batch not seen in training"
    question = "in a batch not seen in training"
    example = "another batch"
    cues = (r"\b(?:unseen|new|another|held[- ]out)\s+batch(?:es)?\b",)

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
    assert list(KINDS) == list(BUILT_IN) and DEFAULT_KIND == "unseen-perturbation"
    for name, kind in KINDS.items():
        assert task_kind(name) is kind and kind.name == name and kind.description
    with pytest.raises(InputError, match="unknown task kind 'unseen-batch'.*use one of: unseen-perturbation, "):
        task_kind("unseen-batch")  # not registered: refused, with the registered names
    with pytest.raises(InputError, match="unknown task kind 'unseen-batch'"):
        RunConfig(run_id="r", task="unseen-batch", inputs=[])
    with pytest.raises(ValueError, match="does not say its description"):
        register(type("Mute", (UnseenBatch,), {"name": "unseen-mute", "description": ""})())
    assert "unseen-mute" not in KINDS


def test_a_run_configuration_stores_the_kind_by_its_name():
    """task.yaml records the name as before: old run folders load, a config round-trips unchanged."""
    for name in KINDS:
        cfg = RunConfig(run_id="r", task=name, inputs=[])
        assert cfg.model_dump(mode="json")["task"] == name and cfg.task == name
        assert RunConfig.model_validate_json(cfg.model_dump_json()) == cfg
    old = RunConfig.model_validate({"run_id": "r", "task": "unseen-perturbation", "inputs": [], "seed": 0})
    assert old.task == "unseen-perturbation" and task_kind(old.task) is KINDS["unseen-perturbation"]


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


@pytest.mark.parametrize("kind", BUILT_IN)
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
    assert holdout_unit(a) == ("context" if kind == "unseen-cell-context" else "condition")


def test_split_controls_cut_in_the_units_ratios():
    obs = batch_data().obs
    split = np.full(len(obs), "train", dtype=object)
    split_controls(obs, split, {"train": 3, "val": 1}, np.random.default_rng(0))
    ctrl = split[obs["is_control"].to_numpy()]
    assert (ctrl == "val").sum() == 10 and (ctrl == "train").sum() == 30


def test_a_registered_kind_is_configured_unified_read_and_offered_with_no_other_edit(toy, tmp_path):
    """The toy kind, registered here and nowhere else, is a run's task, the Unifier's split on real
    data (Papalexi's three replicates are its batches), the chat's reading of its own cue, and one
    of the choices its task question offers."""
    cfg = RunConfig(run_id="r", task="unseen-batch", inputs=[])
    assert RunConfig.model_validate_json(cfg.model_dump_json()).task == "unseen-batch"
    pap = ad.read_h5ad(real("papalexi_eccite_lowmoi"))
    keep = np.sort(np.random.default_rng(0).choice(pap.n_obs, 1500, replace=False))
    path = tmp_path / "papalexi_slice.h5ad"
    pap[keep].copy().write_h5ad(path)
    run = create_run(tmp_path / "runs", [path], "unseen-batch")
    assert run.config().task == "unseen-batch"

    out = unify([path], task="unseen-batch", seed=0, n_hvg=100)
    obs, info = out.adata.obs, out.report.split_info
    batches = sorted(obs["batch_id"].astype(str).unique())
    assert len(batches) == 3 and info["task"] == "unseen-batch" and info["test_batches"] == [batches[-1]]
    assert set(obs.loc[obs[SPLIT] == "test", "batch_id"].astype(str)) == {batches[-1]}
    assert set(obs.loc[obs[SPLIT] == "val", "batch_id"].astype(str)) == {batches[-2]}
    again = assign_splits(out.adata.copy(), "unseen-batch", seed=5)
    assert (again.obs[SPLIT] == obs[SPLIT]).all()  # the toy's split ignores the seed: the same cut
    assert split_integrity(out.adata, "unseen-batch").passed

    said = "predict the response in another batch"
    assert read_task(said) == ("unseen-batch", "another batch", [])
    got = builtin_intent(said)
    assert got.task == "unseen-batch" and "responses in a batch not seen in training" in got.understood()
    assert builtin_intent("unseen-batch please").task == "unseen-batch"  # its own name, as for every kind
    # the built-in kinds keep their precedence over a later kind
    assert read_task("new drugs in another batch") == ("unseen-perturbation", "new drugs", ["unseen-batch"])

    question = task_question()
    assert question.endswith(", to unseen combinations, or in a batch not seen in training?")
    asked, answers, shown = [], iter(["whatever", "another batch"]), io.StringIO()
    conv = Conversation(ask=lambda p: asked.append(p) or next(answers), console=Console(file=shown, width=400))
    assert ask_task(conv) == ("unseen-batch", "another batch")
    assert asked == [question, question]
    assert "'another batch', or one of unseen-perturbation, unseen-cell-context, unseen-combination, unseen-batch" \
        in shown.getvalue()


def test_unregistered_the_kind_is_gone_everywhere(toy):
    unregister(toy.name)
    assert read_task("predict the response in another batch")[0] is None
    assert "batch" not in task_question()
    with pytest.raises(InputError, match="unknown task kind 'unseen-batch'"):
        RunConfig(run_id="r", task="unseen-batch", inputs=[])
    register(toy)  # the fixture unregisters it again


# files outside tools/tasks that may spell a built-in kind's name, and why
NAMED_ELSEWHERE = {
    # the refusal's fix tells the person which task to run instead (user-facing text)
    "agents/api/prediction.py": 1,
}


def test_no_module_outside_the_tasks_spells_a_kinds_name():
    """Behaviour that depends on the kind asks the Kind object; defaults use registry.DEFAULT_KIND."""
    names = re.compile("|".join(map(re.escape, BUILT_IN)))
    found = {}
    for top in ("agents", "tools", "sandbox", "prompts"):  # the package's folders (tests/test_imports.py)
        for path in sorted((ROOT / top).rglob("*")):
            rel = path.relative_to(ROOT).as_posix()
            if not path.is_file() or rel.startswith("tools/tasks/") or "__pycache__" in rel:
                continue
            hits = len(names.findall(path.read_text(errors="ignore")))
            if hits:
                found[rel] = hits
    assert found == NAMED_ELSEWHERE
