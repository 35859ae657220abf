"""A run interrupted mid-search resumes: finished stages are reused and the chain stays intact."""

import json
import signal
import subprocess
import sys
import time

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def test_interrupted_run_resumes_to_a_verified_complete_run(synthetic_dir, tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.Popen([*CLI, "run", str(synthetic_dir / "labA_counts.h5ad"),
                             str(synthetic_dir / "labB_lognorm.h5ad"), "--out", str(out),
                             "--budget", "2", "--epochs", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    node = None
    while time.time() < deadline and node is None:
        time.sleep(0.5)
        node = next(iter(out.glob("*/nodes/n*/model.py")), None)  # the first trained node (n001 is its paradigm)
    assert node is not None, "the run never reached its first node"
    proc.send_signal(signal.SIGINT)  # Ctrl-C while the first node trains
    proc.communicate(timeout=120)
    run_dir = node.parents[2]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and not (run_dir / "report.md").exists()
    unified_mtime = (run_dir / "unify" / "unified.h5ad").stat().st_mtime

    res = subprocess.run([*CLI, "resume", str(run_dir)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
    assert (run_dir / "unify" / "unified.h5ad").stat().st_mtime == unified_mtime  # reused, not redone
    recs = [json.loads(l) for l in (run_dir / "transcript.jsonl").read_text().splitlines()]
    assert any(r["type"] == "resumed" for r in recs)
    assert "resumed" in next(r for r in recs if r["type"] == "NodePlan" and r["seq"] > 5
                             and "resumed" in r["content"]["reason"])["content"]["reason"]
    tree = json.loads((run_dir / "tree.json").read_text())
    assert sum(1 for n in tree["nodes"].values() if n["status"] == "ok") == 2
    ok = subprocess.run([*CLI, "replay", str(run_dir), "--verify"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout

    again = subprocess.run([*CLI, "resume", str(run_dir)], capture_output=True, text=True)
    assert again.returncode == 2 and "already complete" in again.stderr
