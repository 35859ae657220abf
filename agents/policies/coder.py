"""The Coder's two policies behind one interface: action path -> ``ModelCode``.

- ``BuiltinCoder``: renders the template library (deterministic, offline).
- ``LLMCoder``: prompts a model with the action, the contract and the reference template;
  extracts the code; runs the static checks; sends failures back with the reason (bounded);
  then falls back to the builtin code and says so in the result.
Both return the same type, so the sandbox and transcript never care which one wrote the code.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from harmonycell.agents.policies.llm import LLMConfig, LLMSession, ReplyInvalid, extract_code, run_sync
from harmonycell.tools.search import codegen
from harmonycell.tools.search.actions import PARADIGMS, parse_action
from harmonycell.tools.search.code_checks import ALLOWED_IMPORTS, check_code
from harmonycell.tools.search.codegen import ModelCode


class CodeRequest(BaseModel):
    action: str
    data_dir: Path | None = None
    seed: int = 0
    gene_sets: Path | None = None
    gene_symbols: list[str] | None = None


class BuiltinCoder:
    name = "builtin"

    def write(self, req: CodeRequest) -> ModelCode:
        return codegen.generate(req.action, req.data_dir, seed=req.seed,
                                gene_sets=req.gene_sets, gene_symbols=req.gene_symbols)

    async def awrite(self, req: CodeRequest) -> ModelCode:
        return self.write(req)


def render_prompt(action: str, reference: str, hparams: dict) -> str:
    path = parse_action(action)
    shown = {k: v for k, v in hparams.items() if k != "gene_modules"}
    if "gene_modules" in hparams:
        shown["gene_modules"] = f"<{len(hparams['gene_modules'])} lists of gene indices>"
    template = resources.files("harmonycell.prompts").joinpath("coder.md").read_text()
    return template.format(
        action=path.text(), paradigm=path.paradigm, paradigm_description=PARADIGMS[path.paradigm].description,
        backbone=path.backbone, backbone_description=path.spec.description,
        hparams=json.dumps(shown), allowed_imports=", ".join(sorted(ALLOWED_IMPORTS - {"__future__"})),
        reference=reference.strip(),
    )


def parse_model_reply(reply: str) -> str:
    """Code from a reply, or ``ReplyInvalid`` with every static-check problem as the reason."""
    code = extract_code(reply)
    problems = check_code(code)
    if problems:
        raise ReplyInvalid("; ".join(problems))
    return code


class LLMCoder:
    name = "llm"

    def __init__(self, cfg: LLMConfig, client=None, session: LLMSession | None = None):
        self.session = session or LLMSession(cfg, client=client)
        self.cfg = self.session.cfg
        self.builtin = BuiltinCoder()

    async def awrite(self, req: CodeRequest) -> ModelCode:
        # Configuration (training settings, hparams, data-derived gene modules) is decided by the
        # action path, never by the model: the LLM writes only the architecture.
        base = self.builtin.write(req)
        system = "You write correct, minimal PyTorch model modules that follow a given contract exactly."
        user = render_prompt(req.action, base.code, base.config["hparams"])
        out = await self.session.aask("Coder", "write_model", system, user, parse_model_reply)
        if out.value is not None:
            notes = base.notes + [f"rejected reply {i + 1}: {r}" for i, r in enumerate(out.reasons)]
            return base.model_copy(update={"code": out.value, "policy": "llm", "attempts": out.attempts,
                                           "notes": notes})
        why = out.skipped or out.error or f"{out.attempts} replies failed the checks"
        notes = base.notes + [f"rejected reply {i + 1}: {r}" for i, r in enumerate(out.reasons)]
        notes.append(f"fell back to the builtin template: {why}")
        return base.model_copy(update={"policy": "builtin", "fell_back": True,
                                       "attempts": out.attempts, "notes": notes})

    def write(self, req: CodeRequest) -> ModelCode:
        return run_sync(self.awrite(req))


def make_coder(llm: LLMConfig | None = None, session: LLMSession | None = None) -> BuiltinCoder | LLMCoder:
    if session is not None:
        return LLMCoder(session.cfg, session=session) if session.cfg.uses("coder") else BuiltinCoder()
    return LLMCoder(llm) if llm is not None else BuiltinCoder()
