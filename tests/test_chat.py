"""`harmonycell chat` in a real pseudo-terminal: a whole conversation with off-script turns.

The person states the intent in plain words (a folder and a sentence), asks two questions at the
approval prompt, steers the search once, and asks two questions after the run; the answers come
from the run folder's records and every human turn is on the transcript as a User message."""

import json
import os
import re
import sys

import pexpect

from harmonycell.tools.search.actions import BACKBONES, backbones_of

# what "no generative models" then "no resnet" leaves the search
LEFT = [b for b in backbones_of("discriminative") if b != "resnet"]


# a plain terminal (no colour codes between the words; rich wraps it at 80 columns)
def env() -> dict:
    """A plain terminal (no colour codes between the words; rich wraps it at 80 columns), read when
    spawning so the test's private knowledge base (conftest's XDG_DATA_HOME) reaches the child."""
    return {**os.environ, "TERM": "dumb", "COLUMNS": "250"}


def spawn(out, *args):
    return pexpect.spawn(sys.executable, ["-m", "harmonycell.agents.cli", "chat", "--out", str(out),
                                          "--epochs", "2", "--backend", "local", *args],
                         encoding="utf-8", timeout=int(os.environ.get("CHAT_TIMEOUT", 600)), dimensions=(60, 250), env=env())


def said(text: str) -> str:
    """A regex for ``text`` that lets the terminal wrap its lines between words."""
    return r"\s+".join(text.split())


def quit_chat(child, out):
    """Say quit, see the chat end cleanly, and return the one run folder it left."""
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


def test_chat_conversation_with_questions_and_steering(synthetic_dir, tmp_path):
    out = tmp_path / "runs"
    child = spawn(out)
    child.logfile_read = open(tmp_path / "session.txt", "w")
    child.expect(said("What would you like to predict"))
    child.sendline(f"{synthetic_dir} I want to predict how an unseen cell line responds, "
                   f"in 1 node, no generative models, no simple models")
    child.expect(said("I understood: 2 input"))
    child.expect("unseen-cell-context")
    child.expect(said("will not try: generative, simple"))
    # the UnifyDone line names the held-out cell type, not a count of perturbations
    child.expect(said(r"test holds out cell type Line[AB] \(lab"))
    child.expect(said("Start the model search with 1 node"))
    child.sendline("why only 500 genes?")
    child.expect(said("the intersection"))
    child.expect(said("all of them are kept"))
    child.expect(said("Start the model search"))
    child.sendline("which cell type is held out?")
    child.expect(said(r"test \(\d+ cells\): cell type Line[AB]"))
    child.expect(said("Start the model search"))
    child.sendline("and please no resnet")
    child.expect(said("noted. The search will try discriminative/gated-mlp"))
    child.expect(said("Start the model search"))
    child.sendline("y")
    # the seeded search picks one of the backbones left; its node id follows the paradigm's
    child.expect(said(r"Test (n\d+) on the held-out split now"))
    node = child.match.group(1)
    child.sendline("y")
    child.expect(said("Ask about the result"))
    child.sendline("which model won and why?")
    child.expect(said(rf"{node} \(discriminative/({'|'.join(LEFT)})\) won"))
    winner = "discriminative/" + child.match.group(1)
    child.expect(said("Ask about the result"))
    child.sendline("how does it compare to the baselines?")
    child.expect("train_mean")
    child.expect(said("Ask about the result"))
    child.sendline(f"show me {node}'s code")
    child.expect(said(f"{node}'s model.py:"))
    child.expect("def build_model")
    child.expect(said("Ask about the result"))
    child.sendline("what failed?")
    child.expect(said("nothing failed: every node ran on its first attempt"))
    child.expect(said("Ask about the result"))
    run_dir = quit_chat(child, out)
    recs = records(run_dir)
    user = [r for r in recs if r["source"] == "User" and r["kind"] == "message"]
    intent = next(r["content"] for r in user if r["type"] == "RunIntent")
    assert intent["task"] == "unseen-cell-context" and intent["exclude"] == ["generative", "simple"]
    assert intent["budget_nodes"] == 1 and len(intent["files"]) == 2
    questions = [r["content"] for r in user if r["type"] == "Question"]
    assert [q["topic"] for q in questions] == ["genes", "held_out", "winner", "baselines", "code", "failures"]
    assert all(q["sources"] for q in questions)
    assert "LineA" in questions[1]["answer"] or "LineB" in questions[1]["answer"]
    (steer,) = [r["content"] for r in user if r["type"] == "Steer"]
    assert steer["exclude"] == ["resnet"]
    approval = next(r for r in recs if r["type"] == "Approval")
    assert approval["source"] == "User" and approval["content"]["changes"][0]["exclude"] == ["resnet"]
    # the Planner honoured both exclusions: the one node trained is neither generative nor a resnet
    tree = json.loads((run_dir / "tree.json").read_text())
    trained = [n["action"] for n in tree["nodes"].values() if n["status"] == "ok"]
    assert trained == [winner] and winner.split("/")[1] in LEFT
    assert BACKBONES["resnet"].paradigm == "discriminative"  # so the resnet exclusion was a real choice

    # replay shows the person's turns and the answers beside the agents' messages
    replay = pexpect.run(f"{sys.executable} -m harmonycell.agents.cli replay {run_dir}", encoding="utf-8",
                         dimensions=(60, 250), env=env())
    for text in ("User RunIntent", r"Q: why only 500 genes\?", "User Steer", "exclude resnet",
                 "Unifier -> User UnifyDone", r"User -> Evaluator SearchReviewed"):
        assert re.search(said(text), replay), text
    # the person's turns were written into the same hash chain as the agents' messages
    verify = pexpect.run(f"{sys.executable} -m harmonycell.agents.cli replay {run_dir} --verify",
                         encoding="utf-8", env=env())
    assert "OK" in verify and "hash chain and artifacts intact" in verify, verify


def test_chat_data_change_starts_a_new_run_and_run_again_reuses_the_inputs(synthetic_dir, tmp_path):
    """Holding out a named cell type at the approval prompt needs a new split: the run stops and a
    new one holds that cell type out; "what should we measure next?" hands over to experiment
    planning; 'run again with ...' starts a third run from the same inputs.
    No node trains (each search is declined), so this stays fast."""
    out = tmp_path / "runs"
    child = spawn(out)
    child.logfile_read = open(tmp_path / "session.txt", "w")
    child.expect(said("What would you like to predict"))
    child.sendline(f"{synthetic_dir}/*.h5ad what do knockouts we have not screened do?")
    child.expect(said("task unseen-perturbation"))
    child.expect(said("Start the model search"))
    child.sendline("hold out the Nonexistent cells")
    child.expect(said("no cell type or context named 'Nonexistent cells'"))
    child.sendline("hold out LineA")
    child.expect(said("a new run, as asked"))
    child.expect(said("test holds out cell type LineA"))
    child.expect(said("Start the model search"))
    child.sendline("n")
    child.expect(said("Ask about the result"))
    child.sendline("what should we measure next?")
    child.expect(said("How many perturbations can the next experiment measure"))
    child.sendline("3")
    child.expect(said("experiment planning picked 3 of"))
    child.expect(said("Ask about the result"))
    child.sendline("run again with 20 minutes and no cvae")
    child.expect(said("running again"))
    child.expect(said("time budget 20 min"))
    child.expect(said("Start the model search"))
    child.sendline("n")
    child.expect(said("Ask about the result"))
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(runs) == 3
    first, second, third = (records(r) for r in runs)
    steer = next(r["content"] for r in first if r["type"] == "Steer")
    assert steer["hold_out"] == ["LineA"] and steer["said"] == "hold out LineA"
    stop = next(r["content"] for r in first if r["type"] == "Approval")
    assert not stop["approved"] and "new run" in stop["note"]
    split = json.loads((runs[1] / "unify" / "unify_report.json").read_text())["split_info"]
    assert split["task"] == "unseen-cell-context" and split["test_context"].endswith("|LineA")
    again = next(r["content"] for r in second if r["type"] == "Steer")
    assert again["time_limit_s"] == 1200 and again["exclude"] == ["cvae"]
    import yaml
    cfg = yaml.safe_load((runs[2] / "task.yaml").read_text())
    assert cfg["time_limit_s"] == 1200 and cfg["exclude"] == ["cvae"] and cfg["hold_out"] == ["LineA"]
    assert [i["sha256"] for i in cfg["inputs"]] == [i["sha256"] for i in yaml.safe_load(
        (runs[0] / "task.yaml").read_text())["inputs"]]
    assert any(r["type"] == "RunIntent" for r in third)
    handover = next(r["content"] for r in second if r["type"] == "Question")
    assert handover["topic"] == "next" and handover["sources"] == ["plan.md", "plan.csv"]
    assert any(r["type"] == "plan_experiments" for r in second) and (runs[1] / "plan.md").exists()


def test_chat_with_an_llm_reads_the_request_and_answers_citing_records(synthetic_dir, tmp_path):
    """--llm-config: the LLM (a stub server over real HTTP) reads the request into the typed
    request and answers questions citing the run's records; the Unifier's LLM replies are unusable
    here, so it falls back to builtin specs, as it says. The search is declined: no node trains."""
    from llm_stub import StubServer, chat_completion

    intent = {"task": "unseen-cell-context", "task_because": "the other cell line", "budget_nodes": 1,
              "exclude": [], "hold_out": [], "time_limit_s": None, "ambiguous": []}
    cited = {"answer": "LineB (labB_lognorm) is held out for the test.", "sources": ["unify/unify_report.json"]}
    replies = [chat_completion(json.dumps(intent)), chat_completion("no spec today", 1),
               chat_completion("no spec today", 2), chat_completion(json.dumps(cited), 3),
               chat_completion(json.dumps({**cited, "answer": "Nothing was searched: you declined."}), 4)]
    with StubServer(replies) as stub:
        cfg = tmp_path / "llm.json"
        cfg.write_text(json.dumps({"base_url": stub.base_url, "model": "stub", "max_asks": 1, "transport_retries": 1}))
        out = tmp_path / "runs"
        child = spawn(out, "--llm-config", str(cfg))
        child.logfile_read = open(tmp_path / "session.txt", "w")
        child.expect(said("What would you like to predict"))
        child.sendline(f"{synthetic_dir} does the response carry over to the other cell line?")
        child.expect(said("task unseen-cell-context"))
        child.expect(said(r"\(read by llm\)"))
        child.expect(said("Start the model search with 1 node"))
        child.sendline("which cell type is held out?")
        child.expect(said(r"A \(llm\): LineB \(labB_lognorm\) is held out for the test. \[unify/unify_report.json\]"))
        child.expect(said("Start the model search"))
        child.sendline("n")
        child.expect(said("Ask about the result"))
        child.sendline("which model won?")
        child.expect(said(r"A \(llm\): Nothing was searched"))
        child.expect(said("Ask about the result"))
        child.sendline("quit")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0, child.before
    assert len(stub.requests) == 5
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    recs = records(run_dir)
    calls = [r for r in recs if r["kind"] == "llm_call" and r["source"] == "User"]
    assert [c["type"] for c in calls] == ["intent", "answer", "answer"]
    assert all(c["content"]["outcome"] == "accepted" for c in calls)
    got = next(r["content"] for r in recs if r["type"] == "RunIntent")
    assert got["by"] == "llm" and got["task"] == "unseen-cell-context" and got["budget_nodes"] == 1
    questions = [r["content"] for r in recs if r["type"] == "Question"]
    assert [q["by"] for q in questions] == ["llm", "llm"] and questions[0]["sources"] == ["unify/unify_report.json"]


def test_steering_is_recorded_so_resume_and_rerun_honour_it(synthetic_dir, tmp_path):
    """Steering ("no resnet, add 2 nodes"), then the chat is killed mid-search: the resumed run goes on with the
    steered settings (read from task.yaml, where the Planner wrote them), and `replay --rerun` of the
    killed-and-resumed run reproduces it."""
    import signal
    import subprocess

    import yaml

    cli = [sys.executable, "-m", "harmonycell.agents.cli"]
    out = tmp_path / "runs"
    child = spawn(out)
    child.expect(said("What would you like to predict"))
    child.sendline(f"{synthetic_dir} I want to predict how an unseen cell line responds, in 1 node")
    child.expect(said("Start the model search with 1 node"))
    child.sendline("no resnet, add 2 nodes")
    # a held-out cell line: the closed-form models for this kind come first, resnet is gone
    child.expect(said("noted. The search will try simple/ridge, simple/nearest-gene, simple/nearest-context ..."))
    child.expect(said("Start the model search with 3 node"))
    child.sendline("y")
    child.expect(said("Evaluator -> Planner NodeScored"))  # the first node is scored: stop here
    child.kill(signal.SIGKILL)
    child.close()
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    trained = lambda: [n["action"] for n in json.loads((run_dir / "tree.json").read_text())["nodes"].values()
                       if n["status"] == "ok"]
    assert len(trained()) < 3  # the kill came before the steered budget was spent
    cfg = yaml.safe_load((run_dir / "task.yaml").read_text())
    assert cfg["budget_nodes"] == 3 and "resnet" in cfg["exclude"]
    (changed,) = [r["content"] for r in records(run_dir) if r["type"] == "config_changed"]
    assert changed["changed"]["budget_nodes"] == [1, 3] and changed["changed"]["exclude"][1] == ["resnet"]

    res = subprocess.run([*cli, "resume", str(run_dir)], capture_output=True, text=True, timeout=600, env=env())
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    # the original settings (1 node, resnet allowed) would have stopped at the node already trained
    done = trained()
    assert len(done) == 3 and not any(a.split("/")[1] == "resnet" for a in done), done

    again = subprocess.run([*cli, "replay", str(run_dir), "--rerun", "--out", str(tmp_path / "reruns")],
                           capture_output=True, text=True, timeout=600, env=env())
    assert again.returncode == 0 and "SAME" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
