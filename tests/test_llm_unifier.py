"""The Unifier's LLM policy over real HTTP to a local OpenAI-compatible stub with recorded replies:
a good spec is used, an invalid one is sent back with the reason, a hostile expression never
runs and the input falls back to the builtin policy, visibly."""

import json
import subprocess
import sys

import yaml

from llm_stub import StubServer, chat_completion

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]

LAB_A_SPEC = {
    "dataset_id": "ignored",
    "condition_name": {"type": "direct", "source_key": "guide_target", "confidence": 0.9,
                       "reason": "guide target gene per cell"},
    "is_control": {"type": "logic", "expression": "obs['guide_target'] == 'non-targeting'",
                   "confidence": 0.9, "reason": "non-targeting guides are controls"},
    "pert_type": {"type": "constant", "value": "crispr", "reason": "guides"},
    "cell_type": {"type": "direct", "source_key": "cell_line", "reason": "cell line column"},
    "batch_id": {"type": "direct", "source_key": "replicate", "reason": "replicates"},
    "control_labels": ["non-targeting"],
    "combo_delimiters": [";"],
    "is_already_log1p": False,
    "normalization_required": True,
    "var_index_type": "symbol",
}


def fenced(obj) -> str:
    return "Here is the specification.\n```json\n" + json.dumps(obj) + "\n```\n"


def run_with(responses, synthetic_dir, tmp_path):
    with StubServer(responses) as stub:
        cfg = tmp_path / "llm.yaml"
        cfg.write_text(yaml.safe_dump({"base_url": stub.base_url, "model": "recorded-model", "max_asks": 2}))
        res = subprocess.run([*CLI, "run", str(synthetic_dir / "labA_counts.h5ad"), "--out", str(tmp_path / "runs"),
                              "--budget", "1", "--epochs", "2", "--backend", "local", "--llm-config", str(cfg)],
                             capture_output=True, text=True, timeout=900)
        requests = list(stub.requests)
    return res, requests


def builtin_coder_replies(n=6):
    # the Coder asks too when an LLM is configured: a reply without code makes it fall back
    return [chat_completion("I cannot write code today.", i) for i in range(n)]


def run_records(tmp_path):
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return run_dir, [json.loads(l) for l in (run_dir / "transcript.jsonl").read_text().splitlines()]


def test_invalid_then_good_spec_is_used(synthetic_dir, tmp_path):
    bad = {k: v for k, v in LAB_A_SPEC.items() if k != "condition_name"}  # required field missing
    res, requests = run_with([chat_completion(fenced(bad)), chat_completion(fenced(LAB_A_SPEC), 1),
                              *builtin_coder_replies()], synthetic_dir, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    # the reason went back to the model over HTTP
    assert "condition_name" in requests[1]["messages"][-1]["content"]
    assert "guide_target" in requests[0]["messages"][-1]["content"]  # the audit was in the prompt
    run_dir, recs = run_records(tmp_path)
    spec = json.loads((run_dir / "unify" / "mapping" / "labA_counts.json").read_text())
    assert spec["policy"] in {"llm", "builtin-repair"} and spec["condition_name"]["source_key"] == "guide_target"
    call = next(r for r in recs if r["kind"] == "event" and r["type"] == "mapping_spec_outcome")
    assert "LLM spec after 2" in call["content"]["outcome"]


def test_hostile_expression_never_runs_and_falls_back(synthetic_dir, tmp_path):
    hostile = dict(LAB_A_SPEC, is_control={"type": "logic",
                                           "expression": "__import__('os').system('touch /tmp/pwned')"})
    res, _ = run_with([chat_completion(fenced(hostile)), chat_completion(fenced(hostile), 1),
                       *builtin_coder_replies()], synthetic_dir, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    run_dir, recs = run_records(tmp_path)
    call = next(r for r in recs if r["kind"] == "event" and r["type"] == "mapping_spec_outcome")
    assert "fell back to the builtin policy" in call["content"]["outcome"]
    assert any("__import__" in r for r in call["content"]["rejected"])
    spec = json.loads((run_dir / "unify" / "mapping" / "labA_counts.json").read_text())
    assert spec["policy"].startswith("builtin")
    coder = next(r for r in recs if r["kind"] == "event" and r["type"] == "write_model_outcome")
    assert coder["content"]["fell_back"] is True
