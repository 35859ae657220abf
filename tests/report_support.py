"""A real finished run (through the CLI), and a copy enriched with the fields other parts of
HarmonyCell write (verdict usefulness and intervals, chain head, LLM usage, KB retrieval,
refinement traces, Debugger steps, a failed and a pruned node), appended with the real
Transcript so the hash chain stays valid."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harmonycell.tools.record.transcript import Transcript

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def cli(*args, **kw):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="session")
def report_run(synthetic_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report-runs")
    res = cli("run", synthetic_dir / "labA_counts.h5ad", synthetic_dir / "labB_lognorm.h5ad",
              "--out", out, "--budget", "2", "--epochs", "2", "--backend", "local")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name != "demo-data"]
    return run_dir


FAILED_CODE = "import torch\n\nclass Model:  # the failed node's own code\n    pass\n"


def enrich(run_dir: Path, dest: Path) -> Path:
    """A copy of ``run_dir`` with every optional field the report knows how to show."""
    shutil.copytree(run_dir, dest)
    tree = json.loads((dest / "tree.json").read_text())
    nodes = tree["nodes"]
    best = json.loads((dest / "verdict.json").read_text())
    for nid, status in (("n090", "failed"), ("n091", "pruned")):
        nodes[nid] = {"id": nid, "parent": "n001", "action": f"discriminative/resnet/hparams:lr={nid}", "status": status,
                      "children": [], "visits": 0, "q_sum": 0.0, "q_max": 0.0, "reward": None, "val_metric": None,
                      "wall_s": None}
        nodes["n001"]["children"].append(nid)
    (dest / "tree.json").write_text(json.dumps(tree, indent=2))
    (dest / "nodes" / "n090").mkdir()
    (dest / "nodes" / "n090" / "model.py").write_text(FAILED_CODE)
    (dest / "nodes" / "n090" / "stderr.log").write_text("Traceback ...\nRuntimeError: loss is NaN\n")
    t = Transcript(dest)
    t.append("event", "Planner", "kb_retrieval", {"query": "unseen-perturbation, 2 inputs", "hits": [
        {"run_id": "20261101-000000-abcdef", "similarity": 0.91, "path": "discriminative/resnet", "reward": 0.62}]})
    t.append("message", "Coder", "NodeFailed", {"node_id": "n090", "action": nodes["n090"]["action"], "status": "error",
                                                "error_tail": "RuntimeError: loss is NaN", "attempts": 1})
    t.append("event", "Debugger", "observe", {"observe": "RuntimeError: loss is NaN"})
    t.append("event", "Debugger", "think", {"think": "diverged: lower the learning rate ten-fold"})
    t.append("event", "Debugger", "act", {"act": "patched config lr=1e-4", "tool": "rerun"})
    t.append("llm_call", "Debugger", "debug_fix", {"node": "n090", "model": "stub-model", "status": "ok",
                                                   "usage": {"prompt_tokens": 1200, "completion_tokens": 340}})
    t.append("message", "Debugger", "NodeAbandoned", {"node_id": "n090", "action": nodes["n090"]["action"],
                                                      "reason": "loss is NaN", "attempts": 2})
    t.append("event", "Planner", "refinement_trace", {"node_id": "n002", "steps": [
        {"parameter": "lr", "from": 0.001, "to": 0.0003, "val_metric": 0.41}]})
    head, records = t.head() if hasattr(t, "head") else (t._prev, t._seq)
    verdict = dict(best, useful=False, headline="Valid but not useful: the linear baseline is as good",
                   comparisons=[{"baseline": "train_mean", "metric": "PCC_Delta_shift_corrected", "n": 12,
                                 "mean_diff": 0.31, "ci_low": 0.22, "ci_high": 0.40, "conclusion": "better"},
                                {"baseline": "linear", "metric": "PCC_Delta_shift_corrected", "n": 12,
                                 "mean_diff": -0.02, "ci_low": -0.09, "ci_high": 0.05, "conclusion": "no difference"}],
                   transcript_head={"hash": head, "records": records}, backend="bwrap", isolated=True)
    (dest / "verdict.json").write_text(json.dumps(verdict, indent=2))
    status = json.loads((dest / "status.json").read_text())
    status["llm"] = {"calls": 1, "prompt_tokens": 1200, "completion_tokens": 340, "total_tokens": 1540}
    (dest / "status.json").write_text(json.dumps(status))
    return dest
