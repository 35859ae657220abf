"""The Debugger agent on a real run folder: a node whose code fails is repaired by patching its
module, re-run in the sandbox, and every ReAct step is a transcript record."""

import json
from pathlib import Path

import pytest

from harmonycell.agents.context import RunContext
from harmonycell.agents.debugger import Debugger
from harmonycell.agents.messages import NodeAbandoned, NodeExecuted, NodeFailed
from harmonycell.sandbox.local import LocalBackend
from harmonycell.tools.data.taskdata import export_sandbox_data
from harmonycell.tools.record.runfolder import create_run
from harmonycell.tools.record.transcript import Transcript, read_records, verify

from models_support import canonical_unseen_perturbation

CORPUS = Path(__file__).with_name("repair_corpus")


@pytest.fixture
def ctx(tmp_path, synthetic_dir, monkeypatch):
    monkeypatch.setenv("HARMONYCELL_THREADS", "1")
    run = create_run(tmp_path, [synthetic_dir / "labA_counts.h5ad"], "unseen-perturbation", epochs=2)
    export_sandbox_data(canonical_unseen_perturbation(), run.sandbox_data)
    return RunContext(run=run, config=run.config(), transcript=Transcript(run.root), backend=LocalBackend())


def failed_node(ctx, code: str, error: str) -> NodeFailed:
    node = ctx.run.node_dir("n001")
    node.mkdir(parents=True)
    (node / "model.py").write_text(code)
    (node / "config.json").write_text(json.dumps({"seed": 0, "epochs": 2, "patience": 2, "hparams": {}}))
    return NodeFailed(node_id="n001", action="discriminative/mlp", status="error", error_tail=error)


def test_debugger_patches_the_module_and_the_node_trains(ctx):
    code = (CORPUS / "functional_not_imported.py").read_text()
    msg = failed_node(ctx, code, 'Traceback:\n  File "model.py", line 16, in forward\n'
                                 "NameError: name 'F' is not defined\n")
    out = Debugger(ctx).on_NodeFailed(msg)
    assert isinstance(out, NodeExecuted) and out.attempts == 2
    assert (ctx.run.node_dir("n001") / "model.py").read_text().startswith("import torch.nn.functional as F")
    steps = [r["type"] for r in read_records(ctx.run.transcript) if r["source"] == "Debugger" and r["kind"] == "event"]
    assert steps == ["observe", "think", "act", "result"]
    assert verify(ctx.run.root).ok


def test_unknown_failure_is_abandoned_with_the_reason(ctx):
    msg = failed_node(ctx, (CORPUS / "relu_misspelt.py").read_text(), "ZeroDivisionError: something odd\n")
    out = Debugger(ctx).on_NodeFailed(msg)
    assert isinstance(out, NodeAbandoned) and out.reason == "no known fix: ZeroDivisionError: something odd"
    think = [r for r in read_records(ctx.run.transcript) if r["type"] == "think"]
    assert think[0]["content"]["thought"] == "no known fix for this failure"
