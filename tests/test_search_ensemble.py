"""The ensemble of the search's best nodes as a candidate for the pick: built on the host when the
search ends, recorded on the tree and the transcript, picked only when its cross-fitted validation
score is strictly better than the best node's, scored and checked like a node (the Judge verifies
each member's prediction and recomputes the weighting), and refused by ``predict``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

from harmonycell.agents.api.prediction import PredictionRefused, predict
from harmonycell.agents.context import RunContext
from harmonycell.agents.evaluator import Evaluator
from harmonycell.agents.judge import Judge, ensemble_provenance
from harmonycell.agents.messages import SearchDone
from harmonycell.agents.summaries import summary
from harmonycell.sandbox.local import LocalBackend
from harmonycell.tools.evaluation.metrics import headline_of, score
from harmonycell.tools.evaluation.pseudobulk import targets_for
from harmonycell.tools.record import atomic
from harmonycell.tools.record.runfolder import RunFolder
from harmonycell.tools.record.transcript import Transcript
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.ensemble import condition_folds, cross_fitted

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- the pick rule

def hand_tree(ensemble_val: float) -> T.Tree:
    tree = T.Tree()
    p = tree.add(T.ROOT, "simple", status="decision")
    for action, val in (("simple/ridge", 0.80), ("simple/nearest-gene", 0.70)):
        n = tree.add(p.id, action)
        n.status, n.val_metric, n.reward = "ok", val, val
    tree.ensemble = T.Ensemble(members=["n002", "n003"], actions=["simple/ridge", "simple/nearest-gene"],
                               weights=[0.7, 0.3], val_metric_name="Discrimination_score",
                               val_metric=ensemble_val, val_aggregate={}, folds=5)
    return tree


def test_the_ensemble_is_picked_only_when_strictly_better_on_validation():
    better = hand_tree(0.85)
    assert better.pick() == T.ENSEMBLE_ID
    assert [n.id for n in better.picked_nodes(T.ENSEMBLE_ID)] == ["n002", "n003"]
    assert better.describe(T.ENSEMBLE_ID) == "an ensemble of n002, n003 (weights 0.70, 0.30)"
    sentence = better.pick_sentence(T.ENSEMBLE_ID)
    assert sentence.startswith("The pick is an ensemble (simple (closed-form) models only) of n002")
    assert "better than the best single node's, n002 `simple/ridge` (0.8000)" in sentence
    assert "picked" in better.ensemble_line() and "not picked" not in better.ensemble_line()
    for worse in (0.75, 0.80):  # worse, or a tie: the best node
        tree = hand_tree(worse)
        assert tree.pick() == "n002" == tree.best().id
        assert "not picked (not strictly better)" in tree.ensemble_line()
        assert tree.pick_sentence("n002").startswith("The pick is a simple (closed-form) model, `simple/ridge`")
    none = hand_tree(0.9)
    none.ensemble, none.ensemble_note = None, "1 working node(s) with a validation score: an ensemble needs two"
    assert none.pick() == "n002" and none.ensemble_line() == f"no ensemble: {none.ensemble_note}"
    # the tree round-trips through tree.json with its ensemble
    assert T.Tree.model_validate_json(better.model_dump_json()).pick() == T.ENSEMBLE_ID


def test_the_search_summary_the_chat_shows_names_the_ensemble():
    line = hand_tree(0.85).ensemble_line()
    said = summary("SearchDone", SearchDone(best_node="ensemble", n_nodes=2, reason="budget of 2 node(s) spent",
                                            ensemble=line).model_dump())
    assert "best ensemble of 2 node(s)" in said and "an ensemble of n002, n003 (weights 0.70, 0.30)" in said
    old = summary("SearchDone", {"best_node": "n002", "n_nodes": 1, "reason": "budget"})  # recorded before
    assert old == "best n002 of 1 node(s): budget"


# ----------------------------------------------------------------------------- a real search

@pytest.fixture(scope="module")
def search_run(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble-runs")
    res = subprocess.run([*CLI, "run", str(synthetic_dir / "labB_lognorm.h5ad"), "--out", str(out),
                          "--budget", "3", "--epochs", "2", "--backend", "local", "--no-kb"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def test_a_search_builds_the_ensemble_of_its_best_nodes_and_records_it(search_run):
    tree = T.Tree.load(search_run / "tree.json")
    ok = sorted((n for n in tree.nodes.values() if n.status == "ok" and n.val_metric is not None),
                key=lambda n: (-n.val_metric, -n.reward))
    assert len(ok) >= 2
    ens = tree.ensemble
    assert ens is not None and tree.ensemble_note is None
    assert ens.members == [n.id for n in ok[:3]] and ens.actions == [n.action for n in ok[:3]]
    w = np.array(ens.weights)
    assert (w >= 0).all() and w.sum() == pytest.approx(1.0, abs=1e-5)
    # its validation score is the cross-fitted one, recomputed here from the members' files
    val = targets_for(ad.read_h5ad(RunFolder(search_run).unified), "val")
    P = np.stack([np.load(search_run / "nodes" / m / "pred_val.npy").astype(np.float64) for m in ens.members])
    oof = cross_fitted(P, val.y.astype(np.float64),
                       condition_folds([getattr(q, ens.fold_unit) for q in val.queries], ens.folds, tree.seed))
    saved = np.load(search_run / "nodes" / "ensemble" / "pred_val.npy")
    np.testing.assert_allclose(saved, oof, rtol=1e-5, atol=1e-6)
    assert (ens.val_metric_name, ens.val_metric) == headline_of(score(val, saved).aggregate)
    assert ens.predictions["test"] == atomic.sha256_file(search_run / "nodes" / "ensemble" / "pred_test.npy")
    # on the transcript, and the pick follows the rule
    recs = records(search_run)
    event = next(r["content"] for r in recs if r["type"] == "ensemble")
    assert event["built"] and event["members"] == ens.members and event["weights"] == ens.weights
    done = next(r["content"] for r in recs if r["type"] == "SearchDone")
    # the one-standard-error rule ran on the host's per-query validation scores: their mean is
    # the best's recorded validation headline, and its choice is the pick
    rule = tree.pick_rule
    assert rule is not None and rule.best == tree.validation_pick() and rule.picked == tree.pick()
    best_val = ens.val_metric if rule.best == T.ENSEMBLE_ID else tree.nodes[rule.best].val_metric
    assert rule.n_queries == len(val.queries) and rule.best_mean == pytest.approx(best_val, abs=1e-9)
    rule_event = next(r["content"] for r in recs if r["type"] == "pick_rule")
    assert rule_event["picked"] == rule.picked and rule_event["best"] == rule.best
    assert done["best_node"] == tree.pick() and "an ensemble of " + ", ".join(ens.members) in done["ensemble"]
    test = next(r["content"] for r in recs if r["type"] == "TestScored")
    verdict = json.loads((search_run / "verdict.json").read_text())
    assert test["node_id"] == done["best_node"]
    assert next(c for c in verdict["checks"] if c["name"] == "provenance")["passed"]
    report = (search_run / "report.md").read_text()
    assert "Ensemble of the best nodes (weights fitted on validation only): an ensemble of" in report
    assert tree.pick_sentence(done["best_node"]) in report
    ok_replay = subprocess.run([*CLI, "replay", str(search_run), "--verify"], capture_output=True, text=True)
    assert ok_replay.returncode == 0, ok_replay.stdout


@pytest.fixture
def ensemble_picked(search_run, tmp_path):
    """A copy of the run whose test is the ensemble's (whatever the search picked), scored and
    judged by the Evaluator and the Judge."""
    run_dir = tmp_path / search_run.name
    shutil.copytree(search_run, run_dir)
    run = RunFolder(run_dir)
    ctx = RunContext(run=run, config=run.config(), transcript=Transcript(run.root), backend=LocalBackend())
    done = SearchDone(best_node=T.ENSEMBLE_ID, n_nodes=3, reason="the ensemble, for this test",
                      ensemble=ctx.search_tree().ensemble_line())
    ctx.say("Planner", done)
    scored = Evaluator(ctx).on_SearchDone(done)
    ctx.say("Evaluator", scored)
    return ctx, scored


def test_the_judge_accepts_the_ensemble_and_rejects_it_when_a_member_file_changed(ensemble_picked):
    ctx, scored = ensemble_picked
    run, tree = ctx.run, ctx.search_tree()
    assert scored.node_id == T.ENSEMBLE_ID and scored.predictions.path == "nodes/ensemble/pred_test.npy"
    verdict = Judge(ctx).on_TestScored(scored)
    prov = next(c for c in verdict.checks if c.name == "provenance")
    assert prov.passed and tree.ensemble.label() in prov.detail
    assert next(c for c in verdict.checks if c.name == "code_is_clean").passed
    report = run.report_md.read_text()
    assert f"model (ensemble: {tree.ensemble.label()})" in report and "The pick is an ensemble" in report
    html = (run.root / "report.html").read_text()
    assert tree.ensemble.label() in html
    # a member's test prediction altered after the search: the scored file no longer is its weighting
    member = run.node_dir(tree.ensemble.members[-1]) / "pred_test.npy"
    original = member.read_bytes()
    np.save(member, np.load(member) + 1.0)
    now = atomic.sha256_file(run.root / scored.predictions.path)
    bad = ensemble_provenance(scored, tree, run.nodes_dir, now)
    assert not bad.passed and f"node {tree.ensemble.members[-1]}'s pred_test.npy" in bad.detail
    again = Judge(ctx).on_TestScored(scored)
    assert not again.valid and "provenance" in again.headline
    # the ensemble's own file swapped for another weighting of untouched members: refused too
    member.write_bytes(original)
    ens_file = run.root / scored.predictions.path
    np.save(ens_file, np.load(ens_file) * 1.01)
    assert "not the recorded weighting" in ensemble_provenance(scored, tree, run.nodes_dir,
                                                               atomic.sha256_file(ens_file)).detail


def test_predict_refuses_an_ensemble_pick_by_naming_its_members(ensemble_picked):
    ctx, scored = ensemble_picked
    ctx.say("Judge", Judge(ctx).on_TestScored(scored))
    ctx.run.set_status("complete")
    ens = ctx.search_tree().ensemble
    with pytest.raises(PredictionRefused, match="the run's pick is an ensemble of " + ", ".join(ens.members)) as err:
        predict(ctx.run.root, ["G1"])
    assert all(f"{m}: {a}" in str(err.value) for m, a in zip(ens.members, ens.actions))
