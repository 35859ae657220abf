"""The chat answers "what would knocking out JAK2 do?" after a run from `predict`, in a real
pseudo-terminal: it says it is a prediction and which model made it, and it is on the record."""

import sys

import pexpect

from test_chat import env, quit_chat, records, said, spawn


def test_chat_answers_a_knockout_question_from_predict(synthetic_dir, tmp_path):
    out = tmp_path / "runs"
    child = spawn(out, "--no-kb")
    child.logfile_read = open(tmp_path / "session.txt", "w")
    child.expect(said("What would you like to predict"))
    child.sendline(f"{synthetic_dir} how do cells respond to unseen perturbations? 1 node")
    child.expect(said("Start the model search with 1 node"))
    child.sendline("y")
    child.expect(said(r"Test (n\d+) on the held-out split now"))
    node = child.match.group(1)
    child.sendline("y")
    child.expect(said("Ask about the result"))
    child.sendline("what would knocking out JAK2 do?")
    child.expect(said(rf"PREDICTED by a model, not measured: node {node} \(simple/[a-z-]+\) of this run, "
                      "refitted on every labelled unit"))
    child.expect(said(r"- JAK2 in Line[AB]:"))
    child.expect(said("the run's verdict was"))
    child.expect(said("Ask about the result"))
    child.sendline("and knocking out NOTAGENE42?")
    child.expect(said("I cannot predict that: --perturbation: gene 'NOTAGENE42' is unknown"))
    child.expect(said("Ask about the result"))
    run_dir = quit_chat(child, out)
    recs = records(run_dir)
    asked = [r["content"] for r in recs if r["type"] == "Question" and r["content"]["topic"] == "prediction"]
    assert len(asked) == 2 and asked[0]["by"] == "predict"
    assert asked[0]["sources"][0].endswith("pred.h5ad") and (run_dir / asked[0]["sources"][0]).exists()
    assert [r["type"] for r in recs if r["source"] == "Predictor"] == ["predict.refit", "predict", "prediction_refused"]
    verify = pexpect.run(f"{sys.executable} -m harmonycell.agents.cli replay {run_dir} --verify", encoding="utf-8",
                         env=env())
    assert "hash chain and artifacts intact" in verify, verify
