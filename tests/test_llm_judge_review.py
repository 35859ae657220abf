"""The Judge's LLM review is advisory: notes over real HTTP go into the report text; a bad or
missing reply leaves a visible line; nothing here returns or changes a verdict."""

from types import SimpleNamespace

from harmonycell.agents.policies.judge import advisory_review, llm_usage_section
from harmonycell.agents.policies.llm import LLMConfig, LLMSession
from harmonycell.tools.record.transcript import Transcript

from llm_stub import StubServer, chat_completion


def ctx_with(session, tmp_path):
    return SimpleNamespace(llm_session=session, transcript=Transcript(tmp_path),
                           llm_policy=lambda name: session if session.available(name) else None)


def test_review_notes_are_appended_as_advisory_text(tmp_path):
    with StubServer([chat_completion("Looks fine.\n- the val split has only 3 perturbations\n- width 512 may overfit")]) as stub:
        s = LLMSession(LLMConfig(base_url=stub.base_url, model="m"))
        text = advisory_review(ctx_with(s, tmp_path), "def build_model(info): ...", "# Report\nDeltaPCC 0.4")
    assert "## LLM review (advisory)" in text and "change neither validity" in text
    assert "- the val split has only 3 perturbations" in text and "- width 512 may overfit" in text
    assert "DeltaPCC 0.4" in stub.log[0]["body"]["messages"][-1]["content"]
    assert "| Judge | 1 | 1000 | 400 |" in llm_usage_section(ctx_with(s, tmp_path))


def test_review_without_notes_falls_back_visibly(tmp_path):
    with StubServer([chat_completion("I refuse."), chat_completion("No.")]) as stub:
        s = LLMSession(LLMConfig(base_url=stub.base_url, model="m", max_asks=2))
        text = advisory_review(ctx_with(s, tmp_path), "code", "report")
    assert "No review: 2 replies rejected" in text
