"""The LLM Coder against a real local OpenAI-compatible HTTP server serving recorded replies."""

import socket

import numpy as np
import pytest

from harmonycell.agents.policies.coder import BuiltinCoder, CodeRequest, LLMCoder
from harmonycell.agents.policies.llm import LLMConfig
from harmonycell.sandbox.local import LocalBackend
from harmonycell.sandbox.training import run_training
from harmonycell.tools.search.code_checks import check_code
from harmonycell.tools.data.taskdata import export_sandbox_data

from llm_stub import StubServer, load_recording
from models_support import canonical_unseen_perturbation

ACTION = "discriminative/resnet/hparams:epochs=8,width=64"


@pytest.fixture(autouse=True)
def one_sandbox_thread(monkeypatch):
    # on a 2-core host shared with other jobs, torch's default threads oversubscribe (10x slower)
    monkeypatch.setenv("HARMONYCELL_THREADS", "1")

def coder_for(server: StubServer, **kw) -> LLMCoder:
    return LLMCoder(LLMConfig(base_url=server.base_url, model="recorded-model", transport_retries=1, **kw))


def last_user_text(request: dict) -> str:
    return [m for m in request["messages"] if m["role"] == "user"][-1]["content"]


def test_good_reply_is_used_and_trains(tmp_path):
    data = tmp_path / "data"
    export_sandbox_data(canonical_unseen_perturbation(), data)
    with StubServer(load_recording("coder_good")) as server:
        mc = coder_for(server).write(CodeRequest(action=ACTION, data_dir=data))
    assert mc.policy == "llm" and not mc.fell_back and mc.attempts == 1
    assert "class LowRankShift" in mc.code
    prompt = last_user_text(server.requests[0])
    assert "discriminative/resnet" in prompt and "build_model(info)" in prompt
    assert mc.config == BuiltinCoder().write(CodeRequest(action=ACTION, data_dir=data)).config
    result = run_training(LocalBackend(), data, mc.code, mc.config, tmp_path / "node", timeout_s=120)
    assert result.ok, result.stderr_tail
    assert np.isfinite(np.load(tmp_path / "node" / "pred_test.npy")).all()


def test_os_socket_and_file_replies_never_reach_the_sandbox():
    with StubServer(load_recording("coder_forbidden")) as server:
        mc = coder_for(server).write(CodeRequest(action=ACTION))
    assert len(server.requests) == 3 and mc.attempts == 3
    assert mc.fell_back and mc.policy == "builtin"
    assert mc.code == BuiltinCoder().write(CodeRequest(action=ACTION)).code
    assert check_code(mc.code) == []
    joined = " ".join(mc.notes)
    assert "'os'" in joined and "'socket'" in joined and "'open'" in joined and "fell back" in joined
    # each rejection went back to the model with its reason
    assert "import of 'os' is not allowed" in last_user_text(server.requests[1])
    assert "import of 'socket' is not allowed" in last_user_text(server.requests[2])


def test_re_asks_are_bounded():
    with StubServer(load_recording("coder_forbidden")) as server:
        mc = coder_for(server, max_asks=2).write(CodeRequest(action=ACTION))
    assert len(server.requests) == 2 and mc.fell_back


def test_syntax_error_is_returned_with_its_reason():
    with StubServer(load_recording("coder_syntax_then_good")) as server:
        mc = coder_for(server).write(CodeRequest(action=ACTION))
    assert mc.policy == "llm" and mc.attempts == 2 and not mc.fell_back
    reason = last_user_text(server.requests[1])
    assert "syntax error" in reason and "line " in reason
    assert "syntax error" in mc.notes[0]


def test_reply_without_code_block_is_sent_back():
    with StubServer(load_recording("coder_no_code")) as server:
        mc = coder_for(server).write(CodeRequest(action=ACTION))
    assert mc.attempts == 2 and mc.policy == "llm"
    assert "no ```python code block" in last_user_text(server.requests[1])


def test_unreachable_endpoint_falls_back_and_says_why():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = LLMConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", transport_retries=1, timeout_s=5)
    mc = LLMCoder(cfg).write(CodeRequest(action=ACTION))
    assert mc.fell_back and mc.attempts == 0
    assert any("fell back" in n and "Connection" in n for n in mc.notes), mc.notes


def test_unknown_action_is_rejected_before_any_llm_call():
    from harmonycell.tools.errors import InputError

    with StubServer(load_recording("coder_good")) as server:
        with pytest.raises(InputError, match="resnet"):
            coder_for(server).write(CodeRequest(action="discriminative/transformer"))
    assert server.requests == []


def test_sync_write_works_inside_a_running_event_loop():
    import asyncio

    async def inside_loop():
        with StubServer(load_recording("coder_good")) as server:
            return coder_for(server).write(CodeRequest(action=ACTION))

    mc = asyncio.run(inside_loop())
    assert mc.policy == "llm" and mc.attempts == 1
