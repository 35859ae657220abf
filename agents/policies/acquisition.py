"""Choosing the next experiment's genes from the uncertainty shortlist: two policies, one result.

- ``BuiltinAcquirer``: ``tools.planning.rerank.builtin_rerank`` (uncertainty, diversity against
  what is measured, gene-set coverage with a cap), deterministic and offline;
- ``LLMAcquirer``: shows the model the shortlist (uncertainty, rank, nearest measured gene, gene
  sets) and asks for JSON with exactly B genes from it, a rationale each. A reply that is not
  that (bad JSON, a gene outside the shortlist, a repeat, the wrong count, an empty rationale)
  goes back with the reason, a bounded number of times; then the builtin re-rank chooses and the
  result says so. Every reply and every rejection is kept for the transcript.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from importlib import resources

import numpy as np
from pydantic import BaseModel, Field

from harmonycell.agents.policies.llm import LLMConfig, ReplyInvalid, ask_validated, build_client, run_sync
from harmonycell.tools.planning.rerank import RerankWeights, Shortlist, abs_cosine, builtin_rerank

JSON_BLOCK = re.compile(r"```(?:json)?[ \t]*\n(.*?)```", re.S)
SYSTEM = ("You plan perturbation experiments. You reply with one JSON object choosing genes from a "
          "given shortlist, with a short rationale for each.")


@dataclass
class AcquisitionRequest:
    shortlist: Shortlist
    budget: int
    measured: list[str]  # genes already perturbed (with an embedding)
    measured_emb: np.ndarray
    covered: set[str] = field(default_factory=set)  # gene sets with a measured gene
    cap: int | None = None
    weights: RerankWeights = field(default_factory=RerankWeights)


class Chosen(BaseModel):
    index: int  # into the shortlist
    rationale: str


class AcquisitionResult(BaseModel):
    policy: str  # "builtin" | "llm"
    chosen: list[Chosen]
    fell_back: bool = False
    attempts: int = 0
    notes: list[str] = Field(default_factory=list)
    call: dict | None = None  # what the LLM was asked and answered, for the transcript


class BuiltinAcquirer:
    name = "builtin"

    def choose(self, req: AcquisitionRequest) -> AcquisitionResult:
        picks = builtin_rerank(req.shortlist, req.measured, req.measured_emb, req.budget,
                               req.covered, req.cap, req.weights)
        return AcquisitionResult(policy="builtin", chosen=[Chosen(index=c.index, rationale=c.rationale)
                                                           for c in picks])


def _table(req: AcquisitionRequest) -> str:
    sl = req.shortlist
    sim = abs_cosine(sl.emb, req.measured_emb)
    head = "| gene | uncertainty | rank | most similar measured gene (abs cos) |"
    sep = "|---|---|---|---|"
    if sl.pathways is not None:
        head, sep = head + " gene sets |", sep + "---|"
    rows = [head, sep]
    for i, g in enumerate(sl.genes):
        near = f"{req.measured[int(sim[i].argmax())]} ({sim[i].max():.2f})" if sim.shape[1] else "none"
        row = f"| {g} | {sl.u[i]:.4g} | {int(sl.u_rank[i])} | {near} |"
        if sl.pathways is not None:
            row += f" {', '.join(sl.pathways[i]) or '-'} |"
        rows.append(row)
    return "\n".join(rows)


def render_prompt(req: AcquisitionRequest) -> str:
    sl = req.shortlist
    shown = ", ".join(req.measured[:150]) + (f" ... ({len(req.measured)} in all)" if len(req.measured) > 150 else "")
    summary = f"{len(req.measured)} perturbed gene(s) with an expression embedding: {shown or 'none'}."
    if req.covered:
        summary += f"\nGene sets with a measured gene: {', '.join(sorted(req.covered))}."
    gene_sets = sl.pathways is not None
    template = resources.files("harmonycell.prompts").joinpath("acquisition.md").read_text()
    return template.format(
        budget=req.budget, k=len(sl.genes), n_candidates=sl.n_candidates, measured_summary=summary,
        table=_table(req),
        gene_set_column="; the gene sets (pathways) it belongs to" if gene_sets else "",
        gene_set_rule=(f" (gene sets: prefer sets with no measured gene yet; at most {req.cap} pick(s) "
                       "per set)") if gene_sets else "",
    )


def reask_text(budget: int) -> str:
    return (f"Reply again with one ```json block: {{\"picks\": [...]}} with exactly {budget} entries, "
            "each a gene from the shortlist (at most once) with a non-empty rationale.")


def parse_picks(reply: str, shortlist: list[str], budget: int) -> list[Chosen]:
    """The picks of a reply, or ``ReplyInvalid`` saying exactly what is wrong."""
    blocks = JSON_BLOCK.findall(reply)
    text = max(blocks, key=len) if blocks else reply[reply.find("{"): reply.rfind("}") + 1]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReplyInvalid(f"the reply is not valid JSON ({e.msg} at line {e.lineno})") from None
    picks = obj.get("picks") if isinstance(obj, dict) else None
    if not isinstance(picks, list):
        raise ReplyInvalid('expected an object {"picks": [{"gene": ..., "rationale": ...}, ...]}')
    index = {g.upper(): i for i, g in enumerate(shortlist)}
    out, outside, repeated, malformed = [], [], [], []
    for n, p in enumerate(picks, 1):
        if not isinstance(p, dict) or not isinstance(p.get("gene"), str) \
                or not isinstance(p.get("rationale"), str) or not p["rationale"].strip():
            malformed.append(str(n))
            continue
        i = index.get(p["gene"].strip().upper())
        if i is None:
            outside.append(p["gene"])
        elif any(c.index == i for c in out):
            repeated.append(p["gene"])
        else:
            out.append(Chosen(index=i, rationale=p["rationale"].strip()))
    problems = []
    if outside:
        problems.append(f"gene(s) not in the shortlist: {', '.join(outside)}")
    if repeated:
        problems.append(f"gene(s) picked more than once: {', '.join(repeated)}")
    if malformed:
        problems.append(f"pick(s) {', '.join(malformed)} lack a gene name or a non-empty rationale")
    if len(picks) != budget:
        problems.append(f"{len(picks)} picks given, exactly {budget} required")
    if problems:
        raise ReplyInvalid("; ".join(problems))
    return out


class LLMAcquirer:
    name = "llm"

    def __init__(self, cfg: LLMConfig, client=None):
        self.cfg = cfg
        self.client = client or build_client(cfg)
        self.builtin = BuiltinAcquirer()

    async def achoose(self, req: AcquisitionRequest) -> AcquisitionResult:
        budget = min(req.budget, len(req.shortlist.genes))
        req = replace(req, budget=budget)
        prompt = render_prompt(req)
        out = await ask_validated(self.client, SYSTEM, prompt,
                                  lambda r: parse_picks(r, req.shortlist.genes, budget),
                                  max_asks=self.cfg.max_asks, retries=self.cfg.transport_retries,
                                  reask=reask_text(budget))
        notes = [f"rejected LLM reply {i + 1}: {r}" for i, r in enumerate(out.reasons)]
        call = {"model": self.cfg.model, "prompt": prompt, "replies": out.replies,
                "rejected": out.reasons, "error": out.error}
        if out.value is not None:
            return AcquisitionResult(policy="llm", chosen=out.value, attempts=out.attempts, notes=notes,
                                     call={**call, "outcome": "used"})
        why = out.error or f"{out.attempts} replies failed validation"
        notes.append(f"fell back to the builtin re-rank: {why}")
        res = self.builtin.choose(req)
        return res.model_copy(update={"fell_back": True, "attempts": out.attempts, "notes": notes,
                                      "call": {**call, "outcome": "fell back to builtin"}})

    def choose(self, req: AcquisitionRequest) -> AcquisitionResult:
        return run_sync(self.achoose(req))


def make_acquirer(llm: LLMConfig | None = None) -> BuiltinAcquirer | LLMAcquirer:
    return LLMAcquirer(llm) if llm is not None else BuiltinAcquirer()
