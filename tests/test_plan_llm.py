"""The LLM acquisition policy against a real local OpenAI-compatible HTTP server (recorded replies)."""

import numpy as np

from harmonycell.agents.policies.acquisition import (AcquisitionRequest, BuiltinAcquirer, LLMAcquirer,
                                                     parse_picks)
from harmonycell.agents.policies.llm import LLMConfig, ReplyInvalid
from harmonycell.tools.planning.rerank import Shortlist

from llm_stub import StubServer, load_recording

SHORTLIST = ["SG0371", "SG0479", "SG0212", "SG0042", "SG0017", "SG0101"]


def request(budget=3) -> AcquisitionRequest:
    rng = np.random.default_rng(0)
    emb = rng.normal(0, 1, (len(SHORTLIST), 4))
    sl = Shortlist(SHORTLIST, np.linspace(0.02, 0.01, len(SHORTLIST)), np.arange(1, len(SHORTLIST) + 1), emb, 470)
    return AcquisitionRequest(shortlist=sl, budget=budget, measured=["SG0357", "SG0053"],
                              measured_emb=rng.normal(0, 1, (2, 4)))


def acquirer(server) -> LLMAcquirer:
    return LLMAcquirer(LLMConfig(base_url=server.base_url, model="recorded-model", transport_retries=1))


def user_text(req: dict) -> str:
    return [m for m in req["messages"] if m["role"] == "user"][-1]["content"]


def test_a_gene_outside_the_shortlist_is_rejected_and_re_asked():
    with StubServer(load_recording("acquisition_outside_then_good")) as server:
        res = acquirer(server).choose(request())
    assert len(server.requests) == 2 and res.attempts == 2
    assert res.policy == "llm" and not res.fell_back
    assert [SHORTLIST[c.index] for c in res.chosen] == ["SG0371", "SG0479", "SG0212"]
    assert "replaces SG0357" in res.chosen[2].rationale
    # the rejection went back to the model with its reason, naming the gene
    reask = user_text(server.requests[1])
    assert "not in the shortlist: SG0357" in reask and "exactly 3" in reask
    assert res.notes == ["rejected LLM reply 1: gene(s) not in the shortlist: SG0357"]
    assert res.call["outcome"] == "used" and len(res.call["replies"]) == 2
    # the first prompt showed the shortlist with its uncertainty and the measured genes
    first = user_text(server.requests[0])
    assert "| SG0101 |" in first and "SG0357" in first and "exactly 3 genes" in first


def test_three_invalid_replies_fall_back_to_the_builtin_re_rank():
    with StubServer(load_recording("acquisition_always_invalid")) as server:
        res = acquirer(server).choose(request())
    assert len(server.requests) == 3 and res.fell_back and res.policy == "builtin"
    assert [c.index for c in res.chosen] == [c.index for c in BuiltinAcquirer().choose(request()).chosen]
    reasons = " ".join(res.notes)
    assert "not valid JSON" in reasons
    assert "picked more than once: SG0371" in reasons and "2 picks given, exactly 3 required" in reasons
    assert "lack a gene name or a non-empty rationale" in reasons
    assert res.notes[-1].startswith("fell back to the builtin re-rank")
    assert res.call["outcome"] == "fell back to builtin"


def test_parse_picks_accepts_case_insensitive_names_and_bare_json():
    got = parse_picks('{"picks": [{"gene": "sg0212", "rationale": "why"}]}', SHORTLIST, 1)
    assert got[0].index == 2 and got[0].rationale == "why"
    for bad, reason in [('{"genes": []}', "expected an object"),
                        ('{"picks": [{"gene": "SG0212"}]}', "non-empty rationale")]:
        try:
            parse_picks(bad, SHORTLIST, 1)
        except ReplyInvalid as e:
            assert reason in str(e)
        else:
            raise AssertionError(f"accepted {bad}")
