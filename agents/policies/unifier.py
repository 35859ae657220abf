"""The Unifier's LLM policy: mapping specs written by a model, validated like builtin ones.

The model sees each input's audit (columns, sampled values, X fingerprint, gene ids) and the
MappingSpec JSON schema, and replies with one spec. A reply that is not a valid spec, or whose
``logic`` expressions the restricted evaluator refuses, goes back with the reason (bounded).
Specs that survive are handed to ``tools.unify.unify(specs=...)``, which validates them against
the data and repairs or rejects failing fields exactly as for builtin specs. An input the model
could not map falls back to the builtin policy, and the fallback is reported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources

from pydantic import ValidationError

from harmonycell.agents.policies.llm import LLMConfig, LLMSession, ReplyInvalid
from harmonycell.tools.data.audit import AuditReport
from harmonycell.tools.errors import HarmonyCellError
from harmonycell.tools.data.expr import validate_syntax
from harmonycell.tools.data.mapping import MappingSpec

JSON_BLOCK = re.compile(r"```(?:json)?[ \t]*\n(.*?)```", re.S)
SYSTEM = ("You map single-cell perturbation metadata onto a canonical schema. Reply with one JSON "
          "mapping specification and nothing else of substance.")
REASK = "Fix it and reply again with the complete specification in one ```json block."


def render_prompt(audit: AuditReport) -> str:
    template = resources.files("harmonycell.prompts").joinpath("unifier_mapping.md").read_text()
    return (template.replace("{audit}", audit.model_dump_json(indent=1))
            .replace("{schema}", json.dumps(MappingSpec.model_json_schema()))
            .replace("{dataset_id}", audit.name))


def parse_spec(reply: str, dataset_id: str) -> MappingSpec:
    """A MappingSpec from a reply, or ``ReplyInvalid`` saying what is wrong with it."""
    blocks = JSON_BLOCK.findall(reply)
    text = max(blocks, key=len) if blocks else reply[reply.find("{"): reply.rfind("}") + 1]
    try:
        spec = MappingSpec.model_validate_json(text)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:8])
        raise ReplyInvalid(f"not a valid mapping specification: {problems}") from None
    for name in ("condition_name", "is_control", "pert_type", "cell_type", "donor_id", "batch_id", "dose"):
        fm = getattr(spec, name)
        if fm.type == "logic":
            try:
                validate_syntax(fm.expression or "")
            except HarmonyCellError as e:
                raise ReplyInvalid(f"field {name}: {e.one_line()}") from None
    return spec.model_copy(update={"dataset_id": dataset_id, "policy": "llm"})


@dataclass
class LLMSpecs:
    specs: dict[str, MappingSpec] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # one per input: used, re-asked, fell back
    calls: list[dict] = field(default_factory=list)  # prompt/replies, for the transcript


class LLMUnifier:
    name = "llm"

    def __init__(self, cfg: LLMConfig, client=None, session: LLMSession | None = None):
        self.session = session or LLMSession(cfg, client=client)
        self.cfg = self.session.cfg

    async def aspecs(self, audits: list[AuditReport]) -> LLMSpecs:
        out = LLMSpecs()
        for audit in audits:
            prompt = render_prompt(audit)
            res = await self.session.aask("Unifier", f"mapping_spec:{audit.name}", SYSTEM, prompt,
                                          lambda r, a=audit: parse_spec(r, a.name), reask=REASK)
            out.calls.append({"input": audit.name, "model": self.cfg.model, "replies": res.replies,
                              "rejected": res.reasons, "error": res.error})
            if res.value is not None:
                out.specs[audit.name] = res.value
                out.notes.append(f"{audit.name}: LLM spec after {res.attempts} reply(ies)")
            else:
                why = res.skipped or res.error or f"{res.attempts} replies rejected ({'; '.join(res.reasons)[:300]})"
                out.notes.append(f"{audit.name}: fell back to the builtin policy: {why}")
        return out
