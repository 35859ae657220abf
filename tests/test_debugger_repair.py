"""The Debugger's ReAct loop on broken model files from the repair corpus, in the real local
sandbox: the builtin catalogue's rules, the LLM policy over HTTP with recorded replies, static
checks on every patch, and a transcript-ready record of every step."""

import json
from pathlib import Path

import pytest

from harmonycell.agents.policies.debugger import (Observation, builtin_think, last_error_line, observe,
                                                  repair)
from harmonycell.agents.policies.llm import LLMConfig, LLMSession
from harmonycell.agents.policies.debugger import LLMDebugPolicy
from harmonycell.tools.data.taskdata import export_sandbox_data

from llm_stub import StubServer, chat_completion
from models_support import canonical_unseen_perturbation

CORPUS = Path(__file__).with_name("repair_corpus")
CONFIG = {"seed": 0, "epochs": 2, "batch_size": 64, "lr": 1e-3, "patience": 2, "hparams": {}}


@pytest.fixture(autouse=True)
def one_sandbox_thread(monkeypatch):
    monkeypatch.setenv("HARMONYCELL_THREADS", "1")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("repair") / "data"
    export_sandbox_data(canonical_unseen_perturbation(), d)
    return d


def sandbox_runner(data, work):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.repair import runner

    return runner(data, work)


def obs_of(error: str, status="error", code="def build_model(info):\n    pass\n", config=None) -> Observation:
    return Observation(status=status, error=error, traceback=error, code=code,
                       config=config or {"lr": 1e-3, "batch_size": 128, "epochs": 100},
                       shapes={"n_genes": 200, "n_perts": 30, "n_contexts": 1})


def test_non_finite_rule_matches_words_not_substrings():
    assert builtin_think(obs_of("KeyError: 'info' while reading inference config")) is None
    act = builtin_think(obs_of("FloatingPointError: training loss became nan at epoch 0"))
    assert act.rule == "non_finite" and act.config["lr"] == pytest.approx(1e-4) and act.config["loss"] == "huber"
    assert builtin_think(obs_of("RuntimeError: value is inf")).rule == "non_finite"


def test_oom_halves_batch_then_width_and_timeout_caps_epochs():
    a = builtin_think(obs_of("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", status="oom"))
    assert a.rule == "oom" and a.config["batch_size"] == 64
    b = builtin_think(obs_of("", status="oom", config={"batch_size": 16, "hparams": {"width": 256}}))
    assert b.config["hparams"]["width"] == 128
    t = builtin_think(obs_of("", status="timeout"))
    assert t.rule == "timeout" and t.config["epochs"] == 25 and t.config["patience"] == 3


def test_the_same_action_is_never_proposed_twice():
    o = obs_of("FloatingPointError: loss became nan")
    first = builtin_think(o)
    from harmonycell.agents.policies.debugger import _action_key

    assert builtin_think(o, {_action_key(first.code, first.config)}) is None


def test_last_error_line_skips_harness_notes():
    tail = ('Traceback (most recent call last):\n  (3 sandbox harness frames hidden)\n'
            '  File "model.py", line 9, in forward\nRuntimeError: mat1 and mat2 shapes cannot be multiplied\n'
            '[harness] done\n')
    assert last_error_line(tail).startswith("RuntimeError: mat1")


@pytest.mark.parametrize("name", ["head_outputs_perts", "concat_width_forgotten"])
def test_builtin_loop_repairs_corpus_file_in_the_sandbox(name, data, tmp_path):
    code = (CORPUS / f"{name}.py").read_text()
    run, _ = sandbox_runner(data, tmp_path)
    first = run(code, dict(CONFIG))
    assert not first.ok  # the file really is broken
    log = []
    out = repair(observe(first.status, first.tail, code, dict(CONFIG), data), run, data_dir=data,
                 record=lambda k, p: log.append((k, p)))
    assert out.repaired, out.last_error
    kinds = [k for k, _ in log]
    assert kinds[:4] == ["observe", "think", "act", "result"] and log[-1][1]["ok"] is True
    assert log[0][1]["shapes"]["n_genes"] == 200 and log[2][1]["code_diff"].startswith("---")


def test_llm_patch_failing_static_checks_never_runs_then_good_patch_repairs(data, tmp_path):
    name = "reshape_hardcoded"
    code = (CORPUS / f"{name}.py").read_text()
    replies = json.loads((CORPUS / "llm_replies.json").read_text())[name]
    assert "import os" in replies[0]
    run, counter = sandbox_runner(data, tmp_path)
    first = run(code, dict(CONFIG))
    log = []
    with StubServer([chat_completion(r, i) for i, r in enumerate(replies)]) as stub:
        session = LLMSession(LLMConfig(base_url=stub.base_url, model="recorded-model", transport_retries=1))
        out = repair(observe(first.status, first.tail, code, dict(CONFIG), data), run, data_dir=data,
                     llm=LLMDebugPolicy(session), record=lambda k, p: log.append((k, p)))
    assert out.repaired and out.actions[-1].rule == "llm"
    assert counter["runs"] == 2  # the broken file, then only the good patch: `import os` never ran
    assert "static checks" in stub.log[1]["body"]["messages"][-1]["content"]
    assert "(8, 16) grid" in [p for k, p in log if k == "think"][0]["thought"]
    prompt = stub.log[0]["body"]["messages"][-1]["content"]
    assert '"n_genes": 200' in prompt and "hid.view(-1, 8, 16)" in prompt and "RuntimeError" in prompt


def test_llm_endpoint_down_falls_back_to_the_catalogue_visibly(data, tmp_path):
    code = (CORPUS / "relu_misspelt.py").read_text()
    run, _ = sandbox_runner(data, tmp_path)
    first = run(code, dict(CONFIG))
    log = []
    with StubServer([]) as stub:  # every request answers 500
        session = LLMSession(LLMConfig(base_url=stub.base_url, model="m", transport_retries=1))
        out = repair(observe(first.status, first.tail, code, dict(CONFIG), data), run, data_dir=data,
                     llm=LLMDebugPolicy(session), record=lambda k, p: log.append((k, p)))
    assert out.repaired and out.actions[0].rule == "misspelt_attribute"
    fb = next(p for k, p in log if k == "fallback")
    assert fb["to"] == "builtin" and "endpoint failed" in fb["why"]


def test_corpus_is_complete():
    files = sorted(CORPUS.glob("*.py"))
    names = {p.stem for p in files} - {"make_llm_replies"}
    assert len(names) >= 15
    replies = json.loads((CORPUS / "llm_replies.json").read_text())
    assert names == set(replies)
    for name in names:
        assert (CORPUS / f"{name}.py").read_text().startswith("# mistake: ")
