"""The knowledge base (SPEC 6): SQLite, safe for concurrent runs, retrieval that warm-starts
only a similar task."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np
import pytest

from harmonycell.agents.planner import builtin_policy, excluding
from harmonycell.tools.errors import InputError
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.actions import child_actions
from harmonycell.tools.search.knowledge import (DataScope, TAU_FILTER, WARM_START_THRESHOLD, ExpertWin, KnowledgeBase,
                                                NodeRecord, RunRecord, action_priors, embed, rank)

KANG = ("Task: unseen-cell-context. Perturbation type: cytokine. 1 training perturbations (0 combinations): "
        "stimulated. Cell contexts: B cells, CD14+ Monocytes, CD8 T cells. 907 training cells, 1267 genes. "
        "Most variable genes: ISG15, CCL2, CXCL10, TIMP1, CCL8, ISG20, FTL, SOD2, IFIT3, IFI6, IFIT1, LYZ.")
KANG_OTHER_SCHEMA = ("Task: unseen-cell-context. Perturbation type: cytokine. 1 training perturbations (0 "
                     "combinations): stimulated. Cell contexts: CD4 T cells, CD14+ Monocytes, NK cells, B cells. "
                     "1404 training cells, 2000 genes. Most variable genes: ISG15, IFI6, CXCL10, ISG20, IFIT3, "
                     "CCL8, LYZ, IFIT1, CCL2, FTL, S100A8.")
NORMAN = ("Task: unseen-perturbation. Perturbation type: crispr. 187 training perturbations (98 combinations): "
          "AHR+FEV, BAK1, CBL+CNN1, CEBPE, ETS2, FOXA1, KLF1, MAP2K6, SET, TBX3+TBX2. Cell contexts: K562. "
          "3610 training cells, 500 genes. Most variable genes: HBG1, HBG2, GYPA, PRDX1, HBZ, FTH1.")


# the stored runs' data, and the data of the runs that read them (other files: nothing shared)
STORED = DataScope.of(["sha-of-kang-scgen"], ["CD4 T cells"])
ELSEWHERE = DataScope.of(["sha-of-kang-muscat"], ["B cells"])


def record(run_id: str, profile: str, emb, n_nodes: int = 3, best: float = 0.5,
           scope: DataScope | None = STORED) -> RunRecord:
    nodes = [NodeRecord(f"discriminative/resnet/hparams:lr={i + 1}e-4", best * (i + 1) / n_nodes, 0.1 * i, "ok")
             for i in range(n_nodes)]
    return RunRecord(run_id=run_id, task_kind="unseen-cell-context", profile=profile, embedding=emb,
                     nodes=nodes, selected_path=nodes[-1].action, selected_reward=best, scope=scope)


def _writer(path: str, tag: str, n: int) -> None:
    kb = KnowledgeBase(path)
    rng = np.random.default_rng(len(tag))
    for i in range(n):
        v = rng.normal(size=384).astype(np.float32)
        kb.add(record(f"{tag}-{i}", f"profile {tag} {i}", v / np.linalg.norm(v), n_nodes=5))


def test_two_runs_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "kb.sqlite")
    KnowledgeBase(path).runs()  # nothing yet: reading an absent base is fine and creates nothing
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, tag, 25)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    runs = KnowledgeBase(path).runs()
    assert sorted(r.run_id for r in runs) == sorted([f"a-{i}" for i in range(25)] + [f"b-{i}" for i in range(25)])
    assert all(len(r.nodes) == 5 for r in runs)
    assert all(r.embedding.shape == (384,) for r in runs)


def test_a_dissimilar_task_is_not_warm_started_and_a_similar_one_is(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    e_kang, e_other, e_norman = embed([KANG, KANG_OTHER_SCHEMA, NORMAN])
    kb.add(record("kang-run", KANG, e_kang, best=0.6))
    far = kb.retrieve(e_norman, ELSEWHERE)
    assert far.mode == "tabula rasa" and far.entries == []
    assert far.best_similarity is not None and far.best_similarity <= WARM_START_THRESHOLD
    near = kb.retrieve(e_other, ELSEWHERE)
    assert near.mode == "warm start" and near.best_similarity > WARM_START_THRESHOLD
    assert near.entries[0].run.run_id == "kang-run"
    priors = action_priors(near.entries)
    assert priors["discriminative"] > 0 and priors["discriminative/resnet"] > 0


def test_ranking_filters_by_similarity_and_weights_similarity_with_reward():
    def rec(name, reward):
        return RunRecord(run_id=name, task_kind="x", profile=name, embedding=np.zeros(3), nodes=[],
                         selected_path="generative/cvae", selected_reward=reward)
    got = rank([(rec("low-sim", 0.9), TAU_FILTER), (rec("a", 0.2), 0.9), (rec("b", 0.8), 0.8),
                (rec("c", 0.5), 0.6), (rec("d", 0.1), 0.4)])
    assert [e.run.run_id for e in got] == ["b", "a", "c"]  # top 3; s <= tau dropped
    b = got[0]
    assert b.weight == pytest.approx(0.5 * (0.8 - 0.3) / 0.7 + 0.5 * (0.8 - 0.1) / (0.8 - 0.1))


def test_the_stored_profile_holds_no_targets(tmp_path, synthetic_dir):
    import anndata as ad
    from harmonycell.tools.data.unify import unify
    from harmonycell.tools.search.knowledge import task_profile_text
    adata = unify(sorted(synthetic_dir.glob("*.h5ad")), "unseen-perturbation", 0).adata
    text = task_profile_text(adata, "unseen-perturbation")
    held_out = set(adata.obs.loc[adata.obs["split"].astype(str) != "train", "condition_name"].astype(str))
    held_out -= set(adata.obs.loc[adata.obs["split"].astype(str) == "train", "condition_name"].astype(str))
    assert held_out and not any(f" {c}," in text or f" {c}." in text for c in held_out)
    assert "unseen-perturbation" in text


def test_kb_commands_list_show_forget_and_bad_ids(tmp_path):
    path = tmp_path / "kb.sqlite"
    kb = KnowledgeBase(path)
    v = np.ones(384, np.float32) / np.sqrt(384)
    first = kb.add(record("run-one", KANG, v))
    kb.add(record("run-two", NORMAN, v))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "harmonycell.agents.cli", "kb", *args, "--kb", str(path)],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    out = cli("list")
    assert out.returncode == 0 and "run-one" in out.stdout and "run-two" in out.stdout
    out = cli("show", str(first))
    assert out.returncode == 0 and "discriminative/resnet/hparams:lr=3e-4" in out.stdout
    assert "selected: discriminative/resnet/hparams:lr=3e-4" in out.stdout
    assert cli("forget", str(first)).returncode == 0
    assert [r.run_id for r in KnowledgeBase(path).runs()] == ["run-two"]
    bad = cli("show", "999")
    assert bad.returncode == 2 and "no run with id 999" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    not_kb = tmp_path / "junk.sqlite"
    not_kb.write_text("this is not a database" * 100)
    out = subprocess.run([sys.executable, "-m", "harmonycell.agents.cli", "kb", "list", "--kb", str(not_kb)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not a HarmonyCell knowledge base" in out.stderr


def win(profile: str, emb, backbone: str = "discriminative/attribute-decoder",
        scope: DataScope | None = STORED) -> ExpertWin:
    return ExpertWin(task="papalexi seed 0, 3-fold", profile=profile, embedding=emb, expert="biolord",
                     backbone=backbone, metric="PCC_Delta_shift_corrected", delta=0.101, lo=0.050, hi=0.151,
                     n=25, source="bench/experts.py", scope=scope)


def test_an_expert_win_on_a_similar_task_puts_its_backbone_first_and_not_on_a_dissimilar_one(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    e_kang, e_other, e_norman = embed([KANG, KANG_OTHER_SCHEMA, NORMAN])
    kb.add(record("kang-run", KANG, e_kang, best=0.6))  # its nodes give resnet a prior
    kb.add_expert_win(win(KANG, e_kang))
    near = kb.retrieve(e_other, ELSEWHERE)
    assert near.mode == "warm start" and [w.expert for w, _ in near.expert_wins] == ["biolord"]
    assert near.summary()["expert_wins"][0]["interval"] == [0.050, 0.151]
    priors = action_priors(near.entries, near.expert_wins)
    assert priors["discriminative/attribute-decoder"] > priors["discriminative/resnet"] > 0
    # after the closed-form fits, the first expansion of a fresh search takes the expert's idea,
    # at both levels
    choice = builtin_policy(T.Tree(seed=0, priors=priors), "", priors, excluding(child_actions, {"simple"}))
    assert choice.actions == ["discriminative", "discriminative/attribute-decoder"]
    assert "knowledge-base prior" in choice.reason
    far = kb.retrieve(e_norman, ELSEWHERE)
    assert far.mode == "tabula rasa" and far.expert_wins == [] and action_priors(far.entries, far.expert_wins) == {}
    # once a similar run has trained the expert's backbone, its measurement replaces the win
    measured = record("measured-run", KANG, e_kang, best=0.6)
    measured.nodes.append(NodeRecord("discriminative/attribute-decoder", 0.05, 0.0, "ok"))
    kb.add(measured)
    again = kb.retrieve(e_other, ELSEWHERE)
    priors = action_priors(again.entries, again.expert_wins)
    assert again.expert_wins and priors["discriminative/attribute-decoder"] < priors["discriminative/resnet"]


def test_an_expert_win_alone_warm_starts_a_similar_task(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    e_kang, e_other = embed([KANG, KANG_OTHER_SCHEMA])
    kb.add_expert_win(win(KANG, e_kang))
    got = kb.retrieve(e_other, ELSEWHERE)
    assert got.mode == "warm start" and got.entries == [] and "discriminative/attribute-decoder first" in got.reason
    assert max(action_priors(got.entries, got.expert_wins), key=action_priors(got.entries, got.expert_wins).get) \
        in ("discriminative", "discriminative/attribute-decoder")


def test_an_expert_win_must_name_a_backbone_carrying_an_experts_idea(tmp_path):
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    with pytest.raises(InputError, match="not a backbone that carries an expert's idea"):
        kb.add_expert_win(win(KANG, np.ones(384, np.float32), backbone="discriminative/resnet"))
    assert kb.expert_wins() == []


def test_kb_commands_list_and_forget_expert_results(tmp_path):
    path = tmp_path / "kb.sqlite"
    kb = KnowledgeBase(path)
    wid = kb.add_expert_win(win(KANG, np.ones(384, np.float32) / np.sqrt(384)))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "harmonycell.agents.cli", "kb", *args, "--kb", str(path)],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "250"})
    out = cli("list")
    assert out.returncode == 0 and "biolord" in out.stdout and "+0.101 [0.050, 0.151]" in out.stdout
    assert "discriminative/attribute-decoder" in out.stdout
    assert cli("forget-expert", str(wid)).returncode == 0 and KnowledgeBase(path).expert_wins() == []
    bad = cli("forget-expert", "999")
    assert bad.returncode == 2 and "no expert result with id 999" in bad.stderr


def test_no_stored_result_that_shares_this_runs_test_units_is_read(tmp_path):
    """Folds of one dataset: fold 0's search trained and validated on fold 1's test units, so fold 1
    does not read it; a rerun of fold 0's split may. An expert result measured on every unit
    (cross-validated) is read by no run on that dataset, and by a run on other data; a result
    stored without a scope is not read."""
    kb = KnowledgeBase(tmp_path / "kb.sqlite")
    e_kang, e_other = embed([KANG, KANG_OTHER_SCHEMA])
    data = ["sha-a", "sha-b"]
    fold0, fold1 = DataScope.of(data, ["G1", "G2"]), DataScope.of(reversed(data), ["G3", "G4"])
    assert fold0.dataset == fold1.dataset  # the input files' order does not matter
    run_id = kb.add(record("fold0", KANG, e_kang, scope=fold0))
    win_id = kb.add_expert_win(win(KANG, e_kang, scope=DataScope.of(data, ["G1", "G2", "G3", "G4"])))
    legacy = kb.add(record("before-scopes", KANG, e_kang, scope=None))

    got = kb.retrieve(e_other, fold1)
    assert got.entries == [] and got.expert_wins == [] and got.mode == "tabula rasa"
    assert got.not_read == {f"run {run_id}": "trained or validated on 2 of this run's test units",
                            f"expert result {win_id}": "measured on 2 of this run's test units",
                            f"run {legacy}": "stored without a data scope"}
    assert got.summary()["not_read"] == got.not_read  # on the record (the transcript and tree.json)
    again = kb.retrieve(e_other, DataScope.of(data, ["G1"]))  # its test unit was held out of fold 0 too
    assert [e.run.run_id for e in again.entries] == ["fold0"] and again.expert_wins == []
    other = kb.retrieve(e_other, ELSEWHERE)
    assert {e.run.run_id for e in other.entries} == {"fold0"} and len(other.expert_wins) == 1


def test_a_base_written_before_scopes_opens_and_its_runs_are_not_read(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
      CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, created TEXT NOT NULL,
        task_kind TEXT NOT NULL, profile TEXT NOT NULL, embedding BLOB NOT NULL, model TEXT NOT NULL,
        selected_path TEXT, selected_reward REAL, start TEXT NOT NULL DEFAULT 'tabula rasa');""")
    v = np.ones(384, np.float32) / np.sqrt(384)
    con.execute("INSERT INTO runs (run_id, created, task_kind, profile, embedding, model, selected_path,"
                " selected_reward) VALUES ('old', 'then', 'x', 'p', ?, 'm', 'generative/cvae', 0.5)", (v.tobytes(),))
    con.commit()
    con.close()
    kb = KnowledgeBase(path)
    (old,) = kb.runs()
    assert old.run_id == "old" and old.scope is None
    assert kb.retrieve(v, ELSEWHERE).not_read == {f"run {old.id}": "stored without a data scope"}
    kb.add(record("new", KANG, v))  # the migrated base takes scoped runs
    assert [r.scope for r in kb.runs()] == [None, STORED]
