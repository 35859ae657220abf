"""A whole run with an LLM over real HTTP: every call recorded with its messages, tokens and
latency; the Planner's LLM choice validated and used; the token budget switching the remaining
agents to builtin, visibly; run totals in status.json and the report; the calls replayable, and
`replay --rerun` reproduces the run from the recorded replies alone."""

import json
import subprocess
import sys

import yaml

from harmonycell.agents.policies.llm import ReplayClient
from harmonycell.tools.search.actions import child_actions

from llm_stub import StubServer, chat_completion
from test_llm_unifier import LAB_A_SPEC, fenced

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def test_llm_run_counts_every_token_and_switches_to_builtin_at_the_budget(synthetic_dir, tmp_path):
    # a backbone (paradigm/backbone) the seeded builtin would not pick first, so its use is visible
    choice = [b for p in child_actions("") for b in child_actions(p)][1]
    planner_bad = '```json\n{"parent": "root", "action": "discriminative/transformer9", "rationale": "x"}\n```'
    planner_good = ('```json\n{"parent": "root", "action": "%s", "rationale": "cheap and strong on '
                    'small data"}\n```' % choice)
    replies = [chat_completion(fenced(LAB_A_SPEC), 0, prompt_tokens=900, completion_tokens=100),
               chat_completion(planner_bad, 1, prompt_tokens=500, completion_tokens=50),
               chat_completion(planner_good, 2, prompt_tokens=600, completion_tokens=50)]
    with StubServer(replies) as stub:
        cfg = tmp_path / "llm.yaml"
        cfg.write_text(yaml.safe_dump({"base_url": stub.base_url, "model": "recorded-model"}))
        res = subprocess.run([*CLI, "run", str(synthetic_dir / "labA_counts.h5ad"), "--out", str(tmp_path / "runs"),
                              "--budget", "1", "--epochs", "2", "--backend", "local", "--llm-config", str(cfg),
                              "--max-llm-tokens", "2000"], capture_output=True, text=True, timeout=900)
        n_requests = len(stub.log)
    assert res.returncode == 0, res.stderr[-2000:]
    assert n_requests == 3  # Coder, Debugger and Judge asked nothing: the budget was spent
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    recs = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]
    calls = [r for r in recs if r["kind"] == "llm_call"]
    assert [c["source"] for c in calls] == ["Unifier", "Planner", "Planner"]
    assert all(c["content"]["messages"][0]["role"] == "system" and c["content"]["latency_s"] >= 0 for c in calls)
    assert calls[1]["content"]["verdict"].startswith("rejected") and "transformer9" in calls[1]["content"]["verdict"]
    plan = next(r for r in recs if r["kind"] == "message" and r["type"] == "NodePlan")
    assert plan["content"]["action"] == choice and plan["content"]["reason"].startswith("LLM: cheap")
    stop = next(r for r in recs if r["type"] == "llm_budget_reached")
    assert "2200 >= 2000" in stop["content"]["reason"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "complete"
    assert status["llm"]["tokens"] == 2200 and status["llm"]["calls"] == 3
    assert status["llm"]["by_agent"]["Planner"]["prompt_tokens"] == 1100
    assert "budget reached" in status["llm"]["switched_to_builtin"]
    report = (run_dir / "report.md").read_text()
    assert "## LLM use" in report and "2000 prompt + 200 completion" in report
    replay = ReplayClient.from_transcript(run_dir)
    assert [c["reply"] for c in replay.calls] == [r["choices"][0]["message"]["content"] for r in replies]
    # the stub is gone: a rerun can only get its replies from the recording, and must match
    rerun = subprocess.run([*CLI, "replay", str(run_dir), "--rerun", "--out", str(tmp_path / "reruns")],
                           capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0 and "SAME" in rerun.stdout, rerun.stdout[-2000:] + rerun.stderr[-2000:]
