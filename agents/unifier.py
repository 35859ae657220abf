"""Unifier: mapping spec per input -> validate -> apply -> merge -> split -> genes chosen on
training cells -> task data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import anndata as ad

from harmonycell.agents.base import StepAgent
from harmonycell.agents.policies.unifier import LLMUnifier
from harmonycell.tools.data.audit import AuditReport
from harmonycell.agents.messages import Artifact, AuditDone, UnifyDone
from harmonycell.tools.schema import SPLIT
from harmonycell.tools.tasks.registry import task_kind
from harmonycell.tools.data.taskdata import export_sandbox_data, load_meta
from harmonycell.tools.data.unify import unify, write_unify_outputs
from harmonycell.tools.data.validate import load_specs


def dropped_cells(report: dict) -> int:
    return int(sum(i.get("dropped", 0) for i in report.get("inputs", [])))


def held_out_units(info: dict) -> tuple[str, dict[str, list[str]]]:
    """What the split holds out, named by its task kind: (unit, split -> units), from the split's
    own record."""
    if not info.get("task"):
        return "perturbation", {}
    kind = task_kind(info["task"])
    return kind.unit, kind.held_out(info)


def held_units(units: list[str], show: int = 3) -> str:
    """Held-out units, named: a context ``dataset|cell type`` reads as ``cell type X (dataset)``."""
    if all("|" in u for u in units):
        names = [f"{u.split('|', 1)[1]} ({u.split('|', 1)[0]})" for u in units]
        return ("cell type " if len(names) == 1 else "cell types ") + ", ".join(names)
    more = f", +{len(units) - show} more" if len(units) > show else ""
    return f"{len(units)} perturbation(s) ({', '.join(units[:show])}{more})"


class Unifier(StepAgent):
    description_text = "Infers a mapping spec per input and builds the canonical task data."

    def _llm_specs(self) -> dict:
        """Specs written by the LLM policy; inputs it could not map fall back to builtin."""
        audits = [AuditReport.model_validate_json(p.read_text())
                  for p in sorted(self.ctx.run.audit_dir.glob("*.json"))]
        got = asyncio.run(LLMUnifier(self.ctx.llm, session=self.ctx.llm_session).aspecs(audits))
        for call, note in zip(got.calls, got.notes):  # each call is its own llm_call record
            self.ctx.transcript.append("event", self.name, "mapping_spec_outcome", {**call, "outcome": note})
        return got.specs

    def on_AuditDone(self, done: AuditDone) -> UnifyDone:
        cfg, run = self.ctx.config, self.ctx.run
        if (run.sandbox_data / "meta.json").exists() and run.unified.exists():
            adata = ad.read_h5ad(run.unified)  # a resumed run: unification is already done
            meta = load_meta(run.sandbox_data)
        else:
            specs = self._llm_specs() if self.ctx.llm_policy("unifier") else {}
            # the user's own specs (--specs) win over the model's; both are validated alike
            specs.update(load_specs(Path(cfg.specs_dir)) if cfg.specs_dir else {})
            # the DataAuditor's audits are carried: unify does not fingerprint the inputs again
            audits = {p.stem: AuditReport.model_validate_json(p.read_text())
                      for p in sorted(run.audit_dir.glob("*.json"))}
            outcome = unify([Path(p) for p in done.inputs], task=cfg.task, seed=cfg.seed, specs=specs or None,
                            hold_out=cfg.hold_out or None,
                            fold=tuple(cfg.fold) if cfg.fold else None, audits=audits)
            write_unify_outputs(outcome, run.unify_dir)
            adata = outcome.adata
            # meta.json is written last, so its presence means the export is complete
            meta = export_sandbox_data(adata, run.sandbox_data)
        self.ctx.cache["adata"] = adata
        specs = [self.ctx.artifact(p) for p in sorted((run.unify_dir / "mapping").glob("*.json"))]
        unified = self.ctx.artifact(run.unified)
        obs = adata.obs
        pert = obs[~obs["is_control"].astype(bool)]
        n_cond = {s: int(pert.loc[pert[SPLIT] == s, "condition_name"].nunique()) for s in ("train", "val", "test")}
        report = json.loads((run.unify_dir / "unify_report.json").read_text())
        dropped = dropped_cells(report)
        self.ctx.tool_call(self.name, "unify", {"inputs": done.inputs, "task": cfg.task, "seed": cfg.seed},
                           {"n_obs": adata.n_obs, "n_vars": adata.n_vars, "queries_test": len(meta["queries"]["test"])},
                           specs + [unified])
        unit, held = held_out_units(report.get("split_info") or {})
        return UnifyDone(n_cells=adata.n_obs, n_genes=adata.n_vars, n_conditions=n_cond, unit=unit, held_out=held,
                         dropped_cells=dropped, mapping_specs=[Artifact(**s.model_dump()) for s in specs],
                         unified=Artifact(**unified.model_dump()))
