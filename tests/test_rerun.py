"""`replay --rerun`: a recorded run re-executed in a fresh folder reproduces every decision and
host metric; an edited metric whose chain was recomputed passes --verify but fails --rerun."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from harmonycell.tools.record.rerun_compare import RESUMED_PLAN, compare
from harmonycell.tools.record.transcript import GENESIS, record_hash

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def cli(*args, **kw):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=900, **kw)


def rec(seq, kind, source, type_, content):
    return {"seq": seq, "kind": kind, "source": source, "type": type_, "content": content,
            "artifacts": [], "ts": f"2026-01-01T00:00:0{seq}"}


def test_compare_ignores_times_and_finds_the_first_changed_decision():
    a = [rec(0, "message", "Planner", "NodePlan", {"node_id": "n001", "action": "x"}),
         rec(1, "event", "harmonycell", "sandbox_warning", {"warning": "w"}),
         rec(2, "message", "Evaluator", "NodeScored", {"metrics": {"DeltaPCC": 0.5, "wall_s": 3.0}, "reward": 0.4})]
    b = [rec(0, "message", "Planner", "NodePlan", {"node_id": "n001", "action": "x"}),
         rec(1, "message", "Evaluator", "NodeScored", {"metrics": {"DeltaPCC": 0.5 + 1e-9, "wall_s": 9.0}, "reward": 0.3})]
    same = compare(a, b)
    assert same.same and same.n_records == 2 and same.n_numbers == 1 and same.max_abs_diff < 1e-8
    b[1]["content"]["metrics"]["DeltaPCC"] = 0.51
    diff = compare(a, b)
    assert not diff.same and diff.divergence.recorded_seq == 2
    assert "NodeScored: content.metrics.DeltaPCC" in diff.divergence.line()
    short = compare(a, b[:1] + [rec(5, "event", "x", "y", None)])  # the rerun stopped early
    assert short.divergence.where.endswith("present only in the recorded run")
    b[0]["content"]["action"] = "y"
    assert "NodePlan: content.action" in compare(a, b).divergence.line()


def test_a_stop_and_its_resume_compare_as_one_straight_run():
    """The person's turns are left out; the data stages a resume re-ran and the re-issued plan of
    the node in flight at the stop are spliced out, its half-done records with them."""
    m = lambda seq, source, type_, **c: rec(seq, "message", source, type_, c)
    straight = [m(0, "user", "RunRequest"), m(1, "Unifier", "UnifyDone"),
                m(2, "Planner", "NodePlan", node_id="n002", reason="prior"), m(3, "Evaluator", "NodeScored", node_id="n002"),
                m(4, "Planner", "NodePlan", node_id="n003", reason="uct"), m(5, "Evaluator", "NodeScored", node_id="n003"),
                m(6, "Planner", "SearchDone")]
    killed = [m(0, "user", "RunRequest"), m(1, "Unifier", "UnifyDone"), m(2, "User", "Approval"),
              m(3, "Planner", "NodePlan", node_id="n002", reason="prior"), m(4, "Evaluator", "NodeScored", node_id="n002"),
              m(5, "Planner", "NodePlan", node_id="n003", reason="uct"), m(6, "Debugger", "NodeFailed", node_id="n003"),
              rec(7, "event", "harmonycell", "resumed", {}),
              m(8, "user", "RunRequest"), m(9, "Unifier", "UnifyDone"),
              m(10, "Planner", "NodePlan", node_id="n003", reason="resumed: re-running"),
              m(11, "Evaluator", "NodeScored", node_id="n003"), m(12, "Planner", "SearchDone")]
    assert compare(killed, straight).same
    # a resume that re-ran a node with another outcome is still caught
    killed[11]["content"]["node_id"] = "n004"
    assert "NodeScored: content.node_id" in compare(killed, straight).divergence.line()


def test_a_plan_the_stop_kept_from_the_record_compares_as_first_given():
    """The stop came after the tree held n003's plan but before its NodePlan was written: the
    resumed run issues it with its own reason and the resumed mark, and compares as a straight run."""
    m = lambda seq, source, type_, **c: rec(seq, "message", source, type_, c)
    straight = [m(0, "Unifier", "UnifyDone"), m(1, "Planner", "NodePlan", node_id="n002", reason="prior"),
                m(2, "Evaluator", "NodeScored", node_id="n002"), m(3, "Planner", "NodePlan", node_id="n003", reason="uct"),
                m(4, "Evaluator", "NodeScored", node_id="n003"), m(5, "Planner", "SearchDone")]
    killed = [m(0, "Unifier", "UnifyDone"), m(1, "Planner", "NodePlan", node_id="n002", reason="prior"),
              m(2, "Evaluator", "NodeScored", node_id="n002"), rec(3, "event", "harmonycell", "resumed", {}),
              m(4, "Unifier", "UnifyDone"), m(5, "Planner", "NodePlan", node_id="n003", reason=f"uct {RESUMED_PLAN}"),
              m(6, "Evaluator", "NodeScored", node_id="n003"), m(7, "Planner", "SearchDone")]
    assert compare(killed, straight).same
    killed[5]["content"]["reason"] = f"prior {RESUMED_PLAN}"  # another reason than the straight run's
    assert "NodePlan: content.reason" in compare(killed, straight).divergence.line()


@pytest.fixture(scope="module")
def recorded_run(synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    res = cli("run", synthetic_dir / "labB_lognorm.h5ad", "--out", out, "--budget", "2", "--epochs", "3")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


@pytest.mark.slow  # two real runs; the comparison itself is covered by the fast test above
def test_rerun_reproduces_every_decision_and_metric(recorded_run, tmp_path):
    res = cli("replay", recorded_run, "--rerun", "--out", tmp_path / "reruns")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "SAME" in res.stdout


@pytest.mark.slow
def test_edited_metric_with_recomputed_chain_passes_verify_but_fails_rerun(recorded_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(recorded_run, copy)
    path = copy / "transcript.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    scored = next(r for r in recs if r["type"] == "NodeScored")
    scored["content"]["metrics"]["DeltaPCC"] += 0.2  # a flattering edit
    prev = GENESIS
    for r in recs:  # ...by someone who also recomputes the whole chain
        r["prev"] = prev
        r["hash"] = record_hash(r)
        prev = r["hash"]
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))
    assert cli("replay", copy, "--verify").returncode == 0  # the chain alone cannot tell
    res = cli("replay", copy, "--rerun", "--out", tmp_path / "reruns")
    assert res.returncode == 1 and "DIVERGED" in res.stdout, res.stdout[-3000:]
    assert f"recorded record {scored['seq']}" in res.stdout and "DeltaPCC" in res.stdout
