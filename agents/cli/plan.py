"""``harmonycell plan RUN --budget B``: which perturbations to measure next, with a reason each.

``plan_experiments`` is the one entry point (the command and the chat both call it):
candidates (measured genes no condition perturbed, or the user's list) -> epistemic uncertainty
from a bootstrap ridge ensemble on gene embeddings (``tools.planning.ensemble``) -> the top-k
shortlist -> B picks by the builtin re-rank or an LLM (``agents.policies.acquisition``) ->
``plan.md`` + ``plan.csv`` in the run folder, and a record in the run's transcript.

The transcript references an immutable copy of each plan (``plans/<n>/``); ``plan.md`` and
``plan.csv`` at the top of the run folder are the latest plan. So planning twice never changes a
file an earlier record points to, and ``harmonycell replay --verify`` stays clean.

Register in agents/cli/main.py with ``app.command("plan")(cli_plan.plan)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harmonycell.agents.policies.acquisition import AcquisitionRequest, make_acquirer
from harmonycell.agents.policies.llm import LLMConfig, load_llm_config
from harmonycell.tools.errors import InputError
from harmonycell.tools.evaluation.pseudobulk import gene_lookup
from harmonycell.tools.planning import candidates as cand
from harmonycell.tools.planning.ensemble import (EMBED_PCS, MEMBERS, METHOD, candidate_uncertainty,
                                                 gene_embeddings, measured_effects)
from harmonycell.tools.planning.pathways import default_cap, load_pathways
from harmonycell.tools.planning.plan import EnsembleInfo, Pick, Plan, plan_csv, plan_markdown
from harmonycell.tools.planning.rerank import SHORTLIST_K, RerankWeights, Shortlist, shortlist_indices, uncertainty_ranks
from harmonycell.tools.record import atomic
from harmonycell.tools.record.runfolder import RunFolder
from harmonycell.tools.record.transcript import Transcript

SOURCE = "harmonycell"
EMBEDDING = (f"each gene's loadings on the top {EMBED_PCS} principal components of all measured "
             "cells' expression (the linear baseline's gene embedding)")


def finished_run(run_dir: Path) -> RunFolder:
    run = RunFolder(run_dir)
    if not run.task_yaml.exists():
        raise InputError("no task.yaml here", where=str(run_dir), fix="pass a run folder, e.g. runs/<run-id>")
    status = run.status()
    if status is None or status.state != "complete":
        state = status.state if status else "unknown"
        raise InputError(f"the run is not finished (state: {state})", where=str(run_dir),
                         fix="finish it first (`harmonycell resume RUN`), then plan")
    if not run.unified.exists():
        raise InputError("the run has no unify/unified.h5ad", where=str(run_dir),
                         fix="plan on a run folder left by `harmonycell run` or `harmonycell demo`")
    return run


def _next_plan_dir(run: RunFolder) -> Path:
    n = 1
    while (run.root / "plans" / f"{n:03d}").exists():
        n += 1
    return run.root / "plans" / f"{n:03d}"


def plan_experiments(run_dir: Path, budget: int, candidates: Path | list[str] | None = None,
                     gene_sets: Path | None = None, llm: LLMConfig | Path | None = None,
                     shortlist_k: int = SHORTLIST_K, members: int = MEMBERS, cap: int | None = None,
                     weights: RerankWeights | None = None, seed: int = 0) -> Plan:
    """Plan the next experiment on a finished run; write plan.md/plan.csv and record them."""
    import anndata

    if budget < 1:
        raise InputError(f"budget must be at least 1 (got {budget})", where="--budget", fix="pass --budget 1 or more")
    if members < 2:
        raise InputError(f"an ensemble needs at least 2 members (got {members})", where="--members",
                         fix="pass --members 2 or more")
    run = finished_run(run_dir)
    llm_cfg = load_llm_config(llm) if isinstance(llm, (str, Path)) else llm
    adata = anndata.read_h5ad(run.unified)
    lookup = gene_lookup(adata)
    if candidates is None:
        cs = cand.default_candidates(adata)
    elif isinstance(candidates, (str, Path)):
        cs = cand.resolve_candidates(cand.read_candidate_file(Path(candidates)), adata, str(candidates))
    else:
        cs = cand.resolve_candidates(list(candidates), adata, "the candidate list")
    if budget > len(cs.genes):
        raise InputError(f"budget {budget} exceeds the {len(cs.genes)} candidate gene(s)", where="--budget",
                         fix=f"pass --budget {len(cs.genes)} or fewer, or more candidates")
    pathways = load_pathways(Path(gene_sets), lookup) if gene_sets else None

    emb = gene_embeddings(adata.X, seed=seed)
    unc = candidate_uncertainty(measured_effects(adata), emb, cs.columns, members=members, seed=seed)
    k = max(min(shortlist_k, len(cs.genes)), budget)
    top = shortlist_indices(unc.values, k)
    ranks = uncertainty_ranks(unc.values)
    cols = [cs.columns[i] for i in top]
    sl = Shortlist(genes=[cs.genes[i] for i in top], u=unc.values[top], u_rank=ranks[top], emb=emb[cols],
                   n_candidates=len(cs.genes), pathways=pathways.memberships(cols) if pathways else None)
    names = cand.gene_names(adata)
    measured_cols = sorted(cand.perturbed_columns(adata))
    covered = {p for sets in pathways.memberships(measured_cols) for p in sets} if pathways else set()
    cap = cap or (default_cap(budget, len({p for s in sl.pathways for p in s})) if pathways else None)
    req = AcquisitionRequest(shortlist=sl, budget=budget, measured=[names[c] for c in measured_cols],
                             measured_emb=emb[measured_cols], covered=covered, cap=cap,
                             weights=weights or RerankWeights())
    res = make_acquirer(llm_cfg).choose(req)

    notes = list(res.notes)
    if cs.already_perturbed:
        notes.append(f"already measured, listed anyway: {', '.join(cs.already_perturbed)}")
    picks = [Pick(gene=sl.genes[c.index], uncertainty=float(sl.u[c.index]), rank=r,
                  rationale=c.rationale, uncertainty_rank=int(sl.u_rank[c.index]),
                  gene_sets=sl.pathways[c.index] if sl.pathways is not None else [])
             for r, c in enumerate(res.chosen, 1)]
    plan = Plan(
        run_id=run.config().run_id, budget=budget, policy="llm" if res.policy == "llm" else "builtin",
        fell_back=res.fell_back, llm_attempts=res.attempts, notes=notes, candidate_source=cs.source,
        n_candidates=len(cs.genes), shortlist_k=k, gene_sets=str(gene_sets) if gene_sets else None,
        gene_set_cap=cap,
        ensemble=EnsembleInfo(method=METHOD, members=members, embedding=EMBEDDING, contexts_used=unc.contexts_used,
                              contexts_skipped=unc.contexts_skipped, not_embeddable=unc.not_embeddable),
        picks=picks)
    return write_plan(run, plan, res.call)


def write_plan(run: RunFolder, plan: Plan, llm_call: dict | None) -> Plan:
    kept = _next_plan_dir(run)
    rel = kept.relative_to(run.root)
    plan = plan.model_copy(update={"files": {"plan.md": "plan.md", "plan.csv": "plan.csv",
                                             "recorded copy": str(rel)}})
    md, csv_text = plan_markdown(plan), plan_csv(plan)
    atomic.write_text(kept / "plan.csv", csv_text)
    atomic.write_text(kept / "plan.md", md)
    atomic.write_json(kept / "plan.json", plan.model_dump(mode="json"))
    atomic.write_text(run.root / "plan.csv", csv_text)
    atomic.write_text(run.root / "plan.md", md)
    tr = Transcript(run.root)  # appends after the run's last record; never rewrites it
    if llm_call is not None:
        tr.append("llm_call", SOURCE, "plan_experiments", llm_call)
    tr.append("tool_call", SOURCE, "plan_experiments",
              {"args": {"budget": plan.budget, "candidates": plan.candidate_source, "gene_sets": plan.gene_sets,
                        "policy": plan.policy, "members": plan.ensemble.members, "shortlist_k": plan.shortlist_k},
               "result": {"picks": [p.gene for p in plan.picks], "fell_back": plan.fell_back,
                          "path": str(rel / "plan.md")}},
              [tr.artifact(kept / "plan.md"), tr.artifact(kept / "plan.csv"), tr.artifact(kept / "plan.json")])
    return plan


def render_plan(plan: Plan, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Next experiment: {len(plan.picks)} of {plan.n_candidates} candidates "
                        f"({plan.policy}{', fell back' if plan.fell_back else ''})")
    for col, just in (("rank", "right"), ("gene", "left"), ("uncertainty", "right"), ("why", "left")):
        table.add_column(col, justify=just)
    for p in plan.picks:
        table.add_row(str(p.rank), p.gene, f"{p.uncertainty:.4g}", p.rationale)
    console.print(table)
    console.print(f"uncertainty: {plan.ensemble.method.format(members=plan.ensemble.members)}", highlight=False)
    for n in plan.notes:
        console.print(f"note: {n}", highlight=False)
    console.print(f"written: {Path(run_dir) / 'plan.md'}, {Path(run_dir) / 'plan.csv'}")


def plan(
    run_dir: Path = typer.Argument(..., help="a finished run folder (runs/<run-id>)"),
    budget: int = typer.Option(..., "--budget", help="how many perturbations the next experiment measures"),
    candidates: Optional[Path] = typer.Option(None, "--candidates",
                                              help="text file of genes to choose from (default: measured genes no condition perturbed)"),
    pathway: Optional[Path] = typer.Option(None, "--pathway", help="gene sets (.gmt or .json): cover them, with a cap per set"),
    llm_config: Optional[Path] = typer.Option(None, "--llm-config",
                                              help="JSON/YAML {base_url, model, api_key_env}: an LLM re-ranks the shortlist"),
    shortlist: int = typer.Option(SHORTLIST_K, "--shortlist", help="most uncertain candidates the choice is made from"),
    members: int = typer.Option(MEMBERS, "--members", help="bootstrap members of the uncertainty ensemble"),
    cap: Optional[int] = typer.Option(None, "--cap", min=1, help="picks per gene set (default: an even share of the budget)"),
    seed: int = typer.Option(0),
) -> None:
    """Plan the next experiment: which perturbations to measure next, and why."""
    p = plan_experiments(run_dir, budget, candidates, pathway, llm_config, shortlist_k=shortlist,
                         members=members, cap=cap, seed=seed)
    render_plan(p, run_dir)
