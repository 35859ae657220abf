"""DataAuditor: profiles every input (columns, sampled values, counts-vs-log fingerprint)."""

from __future__ import annotations

from pathlib import Path

from harmonycell.agents.base import StepAgent
from harmonycell.agents.messages import Artifact, AuditDone, RunRequest
from harmonycell.tools.data.audit import SCALE_WORDS, AuditReport, audit_h5ad, write_audit


class DataAuditor(StepAgent):
    description_text = "Profiles each input .h5ad: shape, X fingerprint, obs columns, gene ids."

    def on_RunRequest(self, req: RunRequest) -> AuditDone:
        reports, summaries = [], []
        for path in map(Path, req.inputs):
            json_path = self.ctx.run.audit_dir / f"{path.stem}.json"
            if json_path.exists():  # made at the door, or by this agent before a resume: carried
                rep = AuditReport.model_validate_json(json_path.read_text())
            else:
                rep = audit_h5ad(path)
                json_path = write_audit(rep, self.ctx.run.audit_dir)
            ref = self.ctx.artifact(json_path)
            kind = SCALE_WORDS.get(rep.x.scale, "unclear scale")
            summaries.append(f"{rep.name}: {rep.n_cells} cells x {rep.n_genes} genes, {kind}, "
                             f"{len(rep.obs)} obs columns, var ids {rep.var.index_type}")
            self.ctx.tool_call(self.name, "audit_h5ad", {"path": str(path)},
                               {"n_obs": rep.n_cells, "n_vars": rep.n_genes, "x_kind": kind},
                               [ref])
            reports.append(Artifact(**ref.model_dump()))
        return AuditDone(inputs=req.inputs, summaries=summaries, reports=reports)
