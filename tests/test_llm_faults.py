"""Fault injection over real HTTP: 5xx, 429 with Retry-After, timeouts, malformed bodies. Each
ends in a usable reply or a visible fallback, never a crash; budgets switch agents to builtin;
recorded calls replay without an endpoint."""

import time

from harmonycell.agents.policies.coder import BuiltinCoder, CodeRequest, LLMCoder
from harmonycell.agents.policies.llm import LLMConfig, LLMSession, ReplayClient

from llm_stub import StubServer, chat_completion

ACTION = "discriminative/resnet/hparams:epochs=8,width=64"


def session_for(stub, records=None, **cfg):
    config = LLMConfig(base_url=stub.base_url, model="gpt-4o-mini", **{"transport_retries": 3, **cfg})
    return LLMSession(config, sink=None if records is None else (lambda a, p, r: records.append(r)))


def test_5xx_is_retried_and_the_retry_is_on_the_record():
    records = []
    with StubServer([{"fault": "status", "status": 503}, {"fault": "status", "status": 500},
                     chat_completion("fine")]) as stub:
        out = session_for(stub, records).ask("Coder", "t", "s", "u", str.strip)
    assert out.value == "fine" and len(stub.log) == 3
    (rec,) = records
    assert rec["transport_attempts"] == 3 and "503" in rec["retried"][0] and "500" in rec["retried"][1]


def test_429_waits_as_long_as_retry_after_says():
    records = []
    with StubServer([{"fault": "status", "status": 429, "retry_after": 1}, chat_completion("ok")]) as stub:
        t0 = time.monotonic()
        out = session_for(stub, records).ask("Coder", "t", "s", "u", str.strip)
        waited = time.monotonic() - t0
    assert out.value == "ok" and waited >= 0.95
    assert "retry-after 1s" in records[0]["retried"][0]


def test_timeouts_end_in_a_visible_builtin_fallback():
    slow = {"fault": "delay", "seconds": 2.5, "then": chat_completion("too late")}
    with StubServer([slow, dict(slow)]) as stub:
        cfg = LLMConfig(base_url=stub.base_url, model="m", timeout_s=0.5, transport_retries=2)
        mc = LLMCoder(cfg).write(CodeRequest(action=ACTION))
    assert mc.fell_back and mc.policy == "builtin"
    assert mc.code == BuiltinCoder().write(CodeRequest(action=ACTION)).code
    assert any("Timeout" in n and "fell back" in n for n in mc.notes)


def test_malformed_body_is_an_endpoint_failure_not_a_crash():
    records = []
    with StubServer([{"fault": "malformed"}] * 3) as stub:
        out = session_for(stub, records, transport_retries=2).ask("Coder", "t", "s", "u", str.strip)
    assert out.value is None and out.error
    assert records[-1]["reply"] is None and records[-1]["error"] == out.error


def test_token_budget_switches_to_builtin_and_says_so():
    stops = []
    with StubServer([chat_completion("a"), chat_completion("b"), chat_completion("c")]) as stub:
        s = session_for(stub, max_tokens_total=2000)  # each recorded reply uses 1400 tokens
        s.on_stop(stops.append)
        first, second = s.ask("A", "t", "s", "u", str.strip), s.ask("A", "t", "s", "u", str.strip)
        third = s.ask("A", "t", "s", "u", str.strip)
    assert (first.value, second.value, third.value) == ("a", "b", None)
    assert len(stub.log) == 2 and "token budget reached (2800 >= 2000)" in third.skipped
    assert stops == [third.skipped] and not s.available()
    assert s.usage.tokens == 2800


def test_cost_budget_uses_the_price_table():
    with StubServer([chat_completion("a", prompt_tokens=1_000_000, completion_tokens=0),
                     chat_completion("b")]) as stub:
        s = session_for(stub, max_cost_usd=0.10)  # gpt-4o-mini: $0.15 per 1M input tokens
        assert s.ask("A", "t", "s", "u", str.strip).value == "a"
        out = s.ask("A", "t", "s", "u", str.strip)
    assert s.usage.cost_usd == 0.15 and out.value is None and "cost budget" in out.skipped


def test_recorded_calls_replay_in_order_without_an_endpoint():
    records = []
    with StubServer([chat_completion("no code here"), chat_completion("second")]) as stub:
        def parse(r):
            if "code" in r:
                from harmonycell.agents.policies.llm import ReplyInvalid
                raise ReplyInvalid("try again")
            return r
        live = session_for(stub, records).ask("Coder", "t", "s", "u", parse)
    replay = ReplayClient(records)
    replayed = LLMSession(LLMConfig(base_url="http://127.0.0.1:9/v1", model="m"), client=replay)
    again = replayed.ask("Coder", "t", "s", "u", parse)
    assert (live.value, again.value) == ("second", "second") and again.reasons == live.reasons
    assert replay.requests == [r["messages"] for r in records]  # the same conversation, re-asked
    assert replayed.usage.tokens == 2800
    exhausted = replayed.ask("Coder", "t", "s", "u", parse)
    assert exhausted.value is None and "ReplayExhausted" in exhausted.error
