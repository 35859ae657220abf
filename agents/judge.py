"""Judge: verifies provenance, split integrity and honesty of the result; writes the report.

No LLM decides validity: a confident wrong agent could talk its way past one.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np

from harmonycell.agents.base import StepAgent
from harmonycell.agents.messages import Artifact, Check, TestScored, Verdict
from harmonycell.tools.record import atomic
from harmonycell.tools.search.code_checks import check_code
from harmonycell.agents.policies.judge import report_addendum
from harmonycell.tools.report.markdown import render_report
from harmonycell.tools.report.plots import plot_report
from harmonycell.tools.schema import SPLIT, TaskKind, context_labels
from harmonycell.tools.data.taskdata import load_meta
from harmonycell.tools.record.transcript import read_records
from harmonycell.tools.search.tree import Tree

INTEGRITY = ("provenance", "split_integrity", "sandbox_saw_no_test_targets", "code_is_clean")


def split_integrity(adata, task: TaskKind) -> Check:
    obs = adata.obs
    pert = obs[~obs["is_control"].astype(bool)]
    ctx = context_labels(pert)
    train, test = pert[SPLIT] == "train", pert[SPLIT] == "test"
    if task is TaskKind.unseen_cell_context:
        overlap = set(ctx[train]) & set(ctx[test])
        what = "cell contexts"
    else:
        overlap = set(pert.loc[train, "condition_name"]) & set(pert.loc[test, "condition_name"])
        what = "perturbations"
    n_test = int(test.sum())
    ok = not overlap and n_test > 0
    detail = (f"{n_test} test cells; no held-out {what} seen in training" if ok else
              f"held-out {what} also in training: {sorted(overlap)[:5]}" if overlap else "no test cells")
    return Check(name="split_integrity", passed=ok, detail=detail)


def sandbox_blind(run, adata, task: TaskKind) -> Check:
    """The sandbox's training data holds no cell of what the test asks about: a test perturbation,
    or (unseen cell context) a test context."""
    meta = load_meta(run.sandbox_data)
    with np.load(run.sandbox_data / "train.npz") as z:
        n_train, train_ctx = len(z["X"]), {meta["contexts"][int(i)] for i in np.unique(z["context"])}
    if task is TaskKind.unseen_cell_context:
        leaked = {q["context"] for q in meta["queries"]["test"]} & train_ctx
    else:
        leaked = {q["condition"] for q in meta["queries"]["test"]} & set(meta["train_conditions"])
    expected = int((adata.obs[SPLIT] == "train").sum())
    ok = not leaked and n_train == expected
    return Check(name="sandbox_saw_no_test_targets", passed=ok,
                 detail=f"sandbox training data: {n_train} cells, all from the train split" if ok
                 else f"test targets in sandbox data: {sorted(leaked)[:5]}; {n_train} vs {expected} train cells")


class Judge(StepAgent):
    description_text = "Checks provenance, split integrity and that the result is not fabricated."

    def on_TestScored(self, t: TestScored) -> Verdict:
        run, cfg = self.ctx.run, self.ctx.config
        adata = self.ctx.cache.get("adata") or ad.read_h5ad(run.unified)
        checks = [split_integrity(adata, cfg.task), sandbox_blind(run, adata, cfg.task)]
        if t.node_id is None:
            checks.append(Check(name="provenance", passed=False, detail="no node trained successfully"))
        else:
            checks.append(self._provenance(t))
            code = (run.node_dir(t.node_id) / "model.py").read_text()
            problems = check_code(code)
            checks.append(Check(name="code_is_clean", passed=not problems,
                                detail="model code reads no files, network or processes" if not problems
                                else "; ".join(problems)))
            checks += self._beats(t)
        valid = all(c.passed for c in checks if c.name in INTEGRITY) and t.node_id is not None
        tree = Tree.load(run.tree_json)
        unify = json.loads((run.unify_dir / "unify_report.json").read_text()) if (run.unify_dir / "unify_report.json").exists() else {}
        text = render_report(
            run_id=cfg.run_id, task=cfg.task.value, inputs=[i.path for i in cfg.inputs],
            unify_line=f"{adata.n_obs} cells x {adata.n_vars} genes after unification"
            + (f" ({unify.get('summary')})" if unify.get("summary") else ""),
            tree=tree, best=t.node_id, best_action=tree.nodes[t.node_id].action if t.node_id else None,
            test_metrics=t.metrics, baselines=t.baselines,
            checks=[c.model_dump() for c in checks], valid=valid)
        if t.node_id is not None and t.scores is not None:
            scores = json.loads((run.root / t.scores.path).read_text())
            plot_report(run.root / "report.png", t.metrics, t.baselines, scores["per_perturbation"],
                        tree, run.nodes_dir)
            text += "\n![model vs baselines, per perturbation, training curves](report.png)\n"
        text += report_addendum(self.ctx, t.node_id, text)  # advisory only: `valid` is decided above
        atomic.write_text(run.report_md, text)
        verdict = Verdict(valid=valid, checks=checks, report=Artifact(**self.ctx.artifact(run.report_md).model_dump()))
        atomic.write_text(run.root / "verdict.json", verdict.model_dump_json(indent=2))
        return verdict

    def _provenance(self, t: TestScored) -> Check:
        """The scored test predictions are byte-for-byte the file the sandbox wrote."""
        sandbox_sha = None
        for rec in read_records(self.ctx.run.transcript):
            if rec.get("type") == "NodeExecuted" and rec["content"]["node_id"] == t.node_id:
                sandbox_sha = rec["content"]["predictions"]["test"]["sha256"]
        now = atomic.sha256_file(self.ctx.run.root / t.predictions.path)
        ok = sandbox_sha is not None and sandbox_sha == t.predictions.sha256 == now
        return Check(name="provenance", passed=ok,
                     detail=f"scored file sha256 {now[:12]} matches the sandbox's output" if ok
                     else f"sandbox wrote {str(sandbox_sha)[:12]}, scored {t.predictions.sha256[:12]}, on disk {now[:12]}")

    @staticmethod
    def _beats(t: TestScored) -> list[Check]:
        out = []
        cm = t.baselines.get("control_mean", {}).get("RMSE")
        if cm is not None and t.metrics.get("RMSE") is not None:
            out.append(Check(name="beats_control_mean", passed=t.metrics["RMSE"] < cm,
                             detail=f"RMSE {t.metrics['RMSE']:.4f} vs {cm:.4f}"))
        # DeltaPCC alone is inflated by the shift all perturbations share: also the corrected one
        for metric in ("DeltaPCC", "PCC_Delta_shift_corrected"):
            mine = t.metrics.get(metric)
            for name in ("train_mean", "linear"):
                ref = t.baselines.get(name, {}).get(metric)
                if ref is not None and mine is not None:
                    suffix = "" if metric == "DeltaPCC" else "_shift_corrected"
                    out.append(Check(name=f"beats_{name}{suffix}", passed=mine > ref,
                                     detail=f"{metric} {mine:.3f} vs {ref:.3f}"))
        return out
