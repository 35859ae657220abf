"""Several nodes at once (`--workers N`): slots, virtual loss, one ordered transcript, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_helpers import walled_backend_name

from harmonycell.sandbox.slots import plan_slots
from harmonycell.tools.record.rerun_compare import RESUMED_PLAN
from harmonycell.tools.search import tree as T
from harmonycell.tools.search.failure_routing import REPRESENTATION, reopen_best

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def test_slots_split_cores_and_give_each_gpu_to_one_worker():
    slots = plan_slots(2, [0, 1, 2, 3, 4], n_gpus=0)
    assert [s.cores for s in slots] == [(0, 1, 2), (3, 4)]
    assert all(s.gpu_ids is None for s in slots)  # no GPUs: the backend's default, nothing asked
    slots = plan_slots(3, [0, 1, 2, 3, 4, 5], n_gpus=2)
    assert [s.gpu_ids for s in slots] == [(0,), (1,), ()]  # one node per GPU; the third on CPU
    assert len({c for s in slots for c in s.cores}) == 6  # no core shared
    assert [s.cores for s in plan_slots(3, [0, 1])] == [(0,), (1,), (0,)]  # more workers than cores


def _tree_with_two_backbones() -> T.Tree:
    tree = T.Tree(seed=0)
    for paradigm, backbone in (("discriminative", "discriminative/resnet"), ("generative", "generative/cvae")):
        p = tree.add(T.ROOT, paradigm, status="decision")
        b = tree.add(p.id, backbone)
        b.status, b.reward = "ok", 0.5
        T.backpropagate(tree, b.id, 0.5)
    return tree


def test_virtual_loss_steers_the_next_worker_away_from_a_branch_in_flight():
    menu = lambda a: {"": ["discriminative", "generative"], "discriminative": ["discriminative/resnet"],
                      "generative": ["generative/cvae"]}.get(a, [f"{a}/hparams:lr=0.01", f"{a}/loss:huber"])
    tree = _tree_with_two_backbones()
    first = T.choose_expansion(tree, menu)
    tree.add(first.parent, first.actions[-1])  # planned: in flight on worker 0
    first_paradigm = first.actions[-1].split("/")[0]
    second = T.choose_expansion(tree, menu)
    assert second.actions[-1].split("/")[0] != first_paradigm
    assert "virtual loss for 1 node(s) in flight" in second.reason
    child = tree.nodes[first.parent]
    assert T.uct(child, 3, virtual=1) < T.uct(child, 3)
    assert T.in_flight(tree)[T.ROOT] == 1


def test_reopen_best_refines_the_best_representation_failure_once_all_are_closed():
    tree = _tree_with_two_backbones()
    for node_id, val in (("n002", 0.10), ("n004", 0.30)):
        tree.nodes[node_id].val_metric = val
        tree.nodes[node_id].blocked = f"{REPRESENTATION}: no better than train-mean"
    recs = reopen_best(tree)
    assert tree.nodes["n004"].blocked is None and tree.nodes["n002"].blocked
    assert recs[0]["action_taken"] == "generative/cvae reopened for refinement"
    assert reopen_best(tree)[0]["node"] == "n002" and reopen_best(tree) == []


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def _trained_once(run_dir: Path, budget: int) -> None:
    recs = _records(run_dir)
    runs = [r["content"]["args"]["node"] for r in recs if r["type"] == "sandbox.run_training"]
    tree = json.loads((run_dir / "tree.json").read_text())
    trained = sorted(n["id"] for n in tree["nodes"].values() if n["status"] in ("ok", "failed"))
    assert len(runs) == len(set(runs)) == budget and sorted(runs) == trained
    assert not [n for n in tree["nodes"].values() if n["status"] == "planned"]


def test_two_workers_train_nodes_at_once_and_the_transcript_says_which(synthetic_dir, tmp_path):
    out = tmp_path / "runs"
    res = subprocess.run([*CLI, "run", str(synthetic_dir / "labB_lognorm.h5ad"), "--out", str(out),
                          "--budget", "3", "--epochs", "8", "--backend", walled_backend_name(), "--workers", "2",
                          "--no-kb"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    run_dir = next(out.iterdir())
    recs = _records(run_dir)
    par = next(r for r in recs if r["type"] == "parallel_search")["content"]
    assert par["workers"] == 2 and set(par["slots"][0]["cores"]).isdisjoint(par["slots"][1]["cores"])
    plans = [r for r in recs if r["type"] == "NodePlan"]
    scored = [r for r in recs if r["type"] in ("NodeScored", "NodeAbandoned")]
    # the second node was planned before the first reported: two in flight at once
    assert plans[1]["seq"] < scored[0]["seq"]
    assert {p["worker"] for p in plans[:2]} == {"w0", "w1"}
    for r in recs:  # every record of a node's journey names its worker; the test's records do not
        if r["type"] in ("NodePlan", "NodeExecuted", "NodeScored", "sandbox.run_training"):
            assert r.get("worker") in ("w0", "w1"), r["type"]
        if r["type"] in ("SearchDone", "TestScored", "Verdict"):
            assert "worker" not in r
    measured = next(r for r in recs if r["type"] == "search_budget_measured")["content"]
    assert measured["first_node_wall_s"] > 0 and measured["more_nodes_that_fit"] >= 1  # 15 min default limit
    _trained_once(run_dir, 3)
    ok = subprocess.run([*CLI, "replay", str(run_dir), "--verify"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout


def test_resume_after_sigkill_with_two_nodes_in_flight_trains_each_node_once(synthetic_dir, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.Popen([*CLI, "run", str(synthetic_dir / "labB_lognorm.h5ad"), "--out", str(out),
                             "--budget", "3", "--epochs", "30", "--backend", walled_backend_name(), "--workers", "2",
                             "--no-kb"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    t0 = time.monotonic()
    while len(list(out.glob("*/nodes/*/train_log.jsonl"))) < 2:  # both workers are training
        assert proc.poll() is None, "the run ended before two nodes were in flight"
        assert time.monotonic() - t0 < 300, "two nodes were never in flight together"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = next(out.iterdir())
    in_flight = [n for n in json.loads((run_dir / "tree.json").read_text())["nodes"].values()
                 if n["status"] == "planned"]
    assert len(in_flight) == 2
    res = subprocess.run([*CLI, "resume", str(run_dir)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    recs = _records(run_dir)
    resumed = [r["content"]["node_id"] for r in recs
               if r["type"] == "NodePlan" and r["content"]["reason"].endswith(RESUMED_PLAN)]
    assert sorted(resumed) == sorted(n["id"] for n in in_flight)  # both re-run, none lost
    _trained_once(run_dir, 3)
    ok = subprocess.run([*CLI, "replay", str(run_dir), "--verify"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout


@pytest.mark.parametrize("args, says", [(["--executor", "spark"], "unknown executor 'spark'"),
                                        (["--ray-address", "10.0.0.1:6379"], "--ray-address is for the Ray executor"),
                                        (["--workers", "0"], "--workers")])
def test_bad_scale_options_stop_before_anything_is_written(synthetic_dir, tmp_path, args, says):
    out = tmp_path / "runs"
    res = subprocess.run([*CLI, "run", str(synthetic_dir / "labB_lognorm.h5ad"), "--out", str(out), *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and says in res.stdout + res.stderr
    assert not out.exists() or not any(out.iterdir())
