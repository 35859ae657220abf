"""`harmonycell chat` in a real pseudo-terminal: the person names inputs (a typo is answered, not
fatal), approves and sizes the search, and asks about the result."""

import json
import sys

import pexpect


def test_chat_session(synthetic_dir, tmp_path):
    out = tmp_path / "runs"
    child = pexpect.spawn(sys.executable, ["-m", "harmonycell.agents.cli", "chat", "--out", str(out),
                                           "--epochs", "2", "--backend", "local"],
                          encoding="utf-8", timeout=600, dimensions=(50, 200))
    child.expect("Which .h5ad files")
    child.sendline(str(tmp_path / "nope.h5ad"))
    child.expect("file not found")
    child.expect("Which .h5ad files")
    child.sendline(f"{synthetic_dir / 'labA_counts.h5ad'} {synthetic_dir / 'labB_lognorm.h5ad'}")
    child.expect("Which task")
    child.sendline("")  # the default: unseen-perturbation
    child.expect("Start the model search")
    child.sendline("maybe")
    child.expect("Please answer")
    child.sendline("1")
    child.expect("Ask about the result")
    child.sendline("report")
    child.expect("train_mean")
    child.expect("Ask about the result")
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    recs = [json.loads(l) for l in (run_dir / "transcript.jsonl").read_text().splitlines()]
    approval = next(r for r in recs if r["type"] == "Approval")
    assert approval["source"] == "User" and approval["content"]["budget_nodes"] == 1
    tree = json.loads((run_dir / "tree.json").read_text())
    assert sum(1 for n in tree["nodes"].values() if n["status"] == "ok") == 1
