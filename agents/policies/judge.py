"""The Judge's advisory LLM review and the report's account of the run's LLM use.

The review reads the selected model's code and the report and returns short notes for people.
It is advisory by construction: it returns text that is appended to the report, and nothing in
the verdict (``valid``, the checks, whether the model is useful) is computed from it.
"""

from __future__ import annotations

import re

from harmonycell.agents.policies.llm import ReplyInvalid, usage_summary

SYSTEM = ("You review a machine-learning result for a scientist: the model code and the report. "
          "Point out risks (leakage, overfitting, misleading claims, code smells). Be brief.")
MAX_NOTES = 6


def parse_notes(reply: str) -> list[str]:
    notes = [m.strip()[:300] for m in re.findall(r"^\s*[-*]\s+(.+)$", reply, re.M)]
    if not notes:
        raise ReplyInvalid("no notes found: give each note as one line starting with '- '")
    return notes[:MAX_NOTES]


def review_prompt(code: str, report: str) -> str:
    return (f"Report:\n{report[:6000]}\n\nSelected model code:\n```python\n{code[:6000]}\n```\n\n"
            f"Reply with at most {MAX_NOTES} notes, one line each, each starting with '- '.")


def advisory_review(ctx, code: str | None, report: str) -> str:
    """The review section ("" when the Judge has no LLM, or nothing was selected)."""
    session = ctx.llm_policy("judge")
    if session is None or code is None:
        return ""
    out = session.ask("Judge", "review", SYSTEM, review_prompt(code, report), parse_notes,
                      reask="Reply again with notes, one line each, each starting with '- '.")
    if out.value is None:
        ctx.transcript.append("event", "Judge", "fallback", {"to": "no review", "why": out.why_failed()})
        return f"\n## LLM review (advisory)\n\nNo review: {out.why_failed()}\n"
    lines = "\n".join(f"- {n}" for n in out.value)
    return ("\n## LLM review (advisory)\n\nNotes from the LLM; they change neither validity nor the "
            f"checks above.\n\n{lines}\n")


def llm_usage_section(ctx) -> str:
    """Tokens, cost and latency of the run's LLM calls so far (before the Judge's own review)."""
    session = ctx.llm_session
    if session is None:
        return ""
    u = usage_summary(session.usage)
    rows = "\n".join(f"| {a} | {int(v['calls'])} | {int(v['prompt_tokens'])} | {int(v['completion_tokens'])} "
                     f"| {v['cost_usd']:.4f} |" for a, v in sorted(u["by_agent"].items()))
    text = (f"\n## LLM use\n\n{session.cfg.provider} model `{session.cfg.model}`: {u['calls']} call(s) "
            f"({u['failed_calls']} failed), {u['prompt_tokens']} prompt + {u['completion_tokens']} completion "
            f"tokens, ${u['cost_usd']:.4f}, {u['latency_s']:.1f} s waiting.\n")
    if rows:
        text += "\n| agent | calls | prompt tokens | completion tokens | cost (USD) |\n|---|---|---|---|---|\n" + rows + "\n"
    if u["switched_to_builtin"]:
        text += f"\n{u['switched_to_builtin']}.\n"
    return text


def report_addendum(ctx, node_id: str | None, report: str) -> str:
    """What the LLM side adds to the report: its usage, then the advisory review."""
    code = None
    if node_id is not None:
        path = ctx.run.node_dir(node_id) / "model.py"
        code = path.read_text() if path.exists() else None
    return llm_usage_section(ctx) + advisory_review(ctx, code, report)
