"""A real run's search end to end: the knowledge base warm-starts a second run on the same task,
and a time limit cuts the search short with the best node so far (said in the report)."""

from __future__ import annotations

import json
import subprocess
import sys

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def test_second_run_is_warm_started_and_a_time_limit_cuts_it_short(synthetic_dir, tmp_path):
    kb = tmp_path / "kb.sqlite"
    inputs = [str(synthetic_dir / "labA_counts.h5ad"), str(synthetic_dir / "labB_lognorm.h5ad")]
    common = ["--out", str(tmp_path / "runs"), "--epochs", "1", "--backend", "local", "--kb", str(kb)]
    first = subprocess.run([*CLI, "run", *inputs, "--budget", "1", *common],
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "search budget" in first.stdout and "node(s) fit" in first.stdout
    second = subprocess.run([*CLI, "run", *inputs, "--budget", "5", "--time-limit", "1s", *common],
                            capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(runs) == 2
    one, two = (records(r) for r in runs)
    kb_one = next(r["content"] for r in one if r["type"] == "knowledge_base")
    kb_two = next(r["content"] for r in two if r["type"] == "knowledge_base")
    assert kb_one["mode"] == "tabula rasa" and kb_one["n_stored"] == 0
    assert kb_two["mode"] == "warm start" and kb_two["best_similarity"] > 0.99
    assert kb_two["retrieved"][0]["run_id"] == runs[0].name
    plans = [r["content"] for r in two if r["type"] == "NodePlan"]
    # the closed-form models come first, warm start or not (the knowledge base orders the
    # networks after them: tests/test_search_policy.py); here the retrieved run's selected path
    # is that closed-form fit, and it carries the knowledge-base prior
    assert len(plans) == 1 and "closed-form models first" in plans[0]["reason"]
    assert plans[0]["action"] == kb_two["retrieved"][0]["selected_path"]
    assert kb_two["priors"][plans[0]["action"]] > 0
    done = next(r["content"] for r in two if r["type"] == "SearchDone")
    assert "time limit" in done["reason"] and "cut short" in done["reason"] and done["best_node"]
    assert "CUT SHORT" in (runs[1] / "report.md").read_text()
    tree = json.loads((runs[1] / "tree.json").read_text())
    assert tree["cut_short"] is True
    # both finished runs are in the knowledge base, with their nodes and selected paths
    out = subprocess.run([*CLI, "kb", "list", "--kb", str(kb)], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "COLUMNS": "250"})
    assert out.returncode == 0 and runs[0].name in out.stdout and runs[1].name in out.stdout
    assert "warm start" in out.stdout and "tabula rasa" in out.stdout
