"""A plan for the next experiment: the data model and its Markdown and CSV renderings."""

from __future__ import annotations

import csv
import io
from typing import Literal

from pydantic import BaseModel, Field

CSV_COLUMNS = ("gene", "uncertainty", "rank", "rationale", "uncertainty_rank", "gene_sets")


class Pick(BaseModel):
    gene: str
    uncertainty: float
    rank: int  # 1 = measure first
    rationale: str
    uncertainty_rank: int  # among all candidates, 1 = most uncertain
    gene_sets: list[str] = Field(default_factory=list)


class EnsembleInfo(BaseModel):
    method: str
    members: int
    embedding: str
    contexts_used: dict[str, int]  # context -> measured perturbations fitted
    contexts_skipped: dict[str, int] = Field(default_factory=dict)
    not_embeddable: list[str] = Field(default_factory=list)  # conditions on unmeasured genes


class Plan(BaseModel):
    run_id: str
    budget: int
    policy: Literal["builtin", "llm"]
    fell_back: bool = False
    llm_attempts: int = 0
    notes: list[str] = Field(default_factory=list)
    candidate_source: str
    n_candidates: int
    shortlist_k: int
    gene_sets: str | None = None
    gene_set_cap: int | None = None
    ensemble: EnsembleInfo
    picks: list[Pick]
    files: dict[str, str] = Field(default_factory=dict)  # what was written, relative to the run folder


def plan_csv(plan: Plan) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for p in plan.picks:
        w.writerow([p.gene, f"{p.uncertainty:.6g}", p.rank, p.rationale, p.uncertainty_rank, ";".join(p.gene_sets)])
    return buf.getvalue()


def plan_markdown(plan: Plan) -> str:
    who = {"builtin": "the builtin re-rank (uncertainty, diversity against what is measured"
                      + (", gene-set coverage with a cap" if plan.gene_sets else "") + ")",
           "llm": "an LLM, from the uncertainty shortlist"}[plan.policy]
    e = plan.ensemble
    lines = [
        f"# Next experiment for run {plan.run_id}: {len(plan.picks)} perturbation(s) to measure",
        "",
        f"Candidates: {plan.n_candidates} ({plan.candidate_source}). Each candidate's epistemic "
        f"uncertainty comes from a {e.method.format(members=e.members)}. The {plan.shortlist_k} most "
        f"uncertain were shortlisted and {who} chose {plan.budget}.",
        "",
        f"Embedding: {e.embedding}. Fitted on "
        + ", ".join(f"{n} measured perturbations in {c}" for c, n in e.contexts_used.items()) + ".",
    ]
    if e.contexts_skipped:
        lines.append("Contexts with too few measured perturbations to fit (not used): "
                     + ", ".join(f"{c} ({n})" for c, n in e.contexts_skipped.items()) + ".")
    if e.not_embeddable:
        lines.append(f"Not used to fit ({len(e.not_embeddable)}: none of their genes is measured, so "
                     f"they have no embedding): {', '.join(e.not_embeddable[:20])}"
                     + (" ..." if len(e.not_embeddable) > 20 else "") + ".")
    if plan.gene_sets:
        lines.append(f"Gene sets: {plan.gene_sets}; at most {plan.gene_set_cap} pick(s) per set.")
    if plan.fell_back:
        lines.append("The LLM's replies were not usable; the builtin re-rank chose instead (notes below).")
    lines += ["", "| rank | gene | uncertainty | uncertainty rank | why |", "|---|---|---|---|---|"]
    for p in plan.picks:
        why = p.rationale.replace("|", "/").replace("\n", " ")
        lines.append(f"| {p.rank} | {p.gene} | {p.uncertainty:.4g} | {p.uncertainty_rank} | {why} |")
    lines += ["", "Uncertainty-driven choices often do no better than random ones in retrospective "
              "benchmarks (SPEC section 11; see bench/results/acquisition.json): treat this as a "
              "reasoned ordering, not a promise of a better model."]
    if plan.notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in plan.notes]
    return "\n".join(lines) + "\n"
