"""The Judge's trust fields: which backend ran the selected node, and the transcript anchor."""

from __future__ import annotations

from harmonycell.agents.judge import isolation_check, node_backend, trust_lines
from harmonycell.agents.messages import TranscriptHead, Verdict
from harmonycell.tools.record.transcript import Transcript


def test_selected_node_backend_is_read_from_its_last_execution(tmp_path):
    t = Transcript(tmp_path)
    t.append("message", "Coder", "NodeExecuted", {"node_id": "n001", "backend": "docker"})
    t.append("message", "Coder", "NodeExecuted", {"node_id": "n002", "backend": "unsafe-local"})
    assert node_backend(t.path, "n001") == "docker"
    assert node_backend(t.path, "n002") == "unsafe-local"
    assert node_backend(t.path, "n003") is None


def test_unisolated_node_is_marked_in_the_check_and_the_report():
    head = TranscriptHead(hash="ab" * 32, records=12)
    bad = isolation_check("unsafe-local")
    assert not bad.passed and "UNISOLATED" in bad.detail
    assert "**UNISOLATED**" in trust_lines("unsafe-local", head)
    good = isolation_check("bwrap")
    assert good.passed and "UNISOLATED" not in trust_lines("bwrap", head)
    assert f"--anchor {head.hash}" in trust_lines("bwrap", head)
    v = Verdict(valid=True, checks=[bad], backend="unsafe-local", isolated=False, transcript_head=head)
    assert v.model_dump()["transcript_head"] == {"hash": head.hash, "records": 12}
