"""Judge: verifies provenance, split integrity and honesty of the result; writes the report.

No LLM decides validity: a confident wrong agent could talk its way past one.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np

from harmonycell.agents.base import StepAgent
from harmonycell.agents.messages import Artifact, Check, TestScored, TranscriptHead, Verdict
from harmonycell.sandbox.backends import is_isolated
from harmonycell.tools.record import atomic
from harmonycell.tools.search.code_checks import check_code
from harmonycell.tools.search.ensemble import verify_ensemble
from harmonycell.tools.search.tree import ENSEMBLE_ID, Tree
from harmonycell.agents.policies.judge import report_addendum
from harmonycell.tools.report.markdown import render_report
from harmonycell.tools.report.plots import plot_report
from harmonycell.tools.evaluation.compare import usefulness
from harmonycell.tools.evaluation.metrics import FALLBACK_METRIC, SEARCH_METRIC
from harmonycell.tools.evaluation.ceiling import NOISE_CEILING
from harmonycell.tools.evaluation.verdict import decidability
from harmonycell.tools.report.markdown import headline_text
from harmonycell.tools.report.publish import write_report_html
from harmonycell.tools.schema import SPLIT
from harmonycell.tools.tasks.registry import task_kind
from harmonycell.tools.data.taskdata import load_meta

INTEGRITY = ("provenance", "split_integrity", "sandbox_saw_no_test_targets", "code_is_clean")


def split_integrity(adata, task: str) -> Check:
    """The split keeps the task's promise, checked at the level the kind promises (its
    ``Kind.integrity``: single perturbations, pairs with seen singles, whole contexts, ...)."""
    pert = adata.obs[~adata.obs["is_control"].astype(bool)]
    test = pert[SPLIT].astype(str) == "test"
    problems, what, n_units = task_kind(task).integrity(adata)
    n_test = int(test.sum())
    if n_test == 0:
        problems.append("no test cells")
    ok = not problems
    noun = what.split(" (")[0]
    detail = (f"{n_test} test cells, {n_units} held-out {noun}; none in a training or validation "
              f"condition" if ok else "; ".join(problems))
    never = list(adata.uns.get("split_info", {}).get("test_conditions_never_trained", []))
    if never:  # announced, not hidden: the test context asks about perturbations never trained
        detail += (f"; {len(never)} test perturbation(s) never trained in any context "
                   f"(e.g. {', '.join(map(str, never[:3]))})")
    return Check(name="split_integrity", passed=ok, detail=detail)


def held_out_unit(adata, task: str) -> tuple[str, int]:
    """(plural noun of the task's held-out unit, how many are held out) for the headline."""
    pert = adata.obs[~adata.obs["is_control"].astype(bool)]
    crispr_only = set(pert["pert_type"].astype(str)) <= {"crispr"}
    kind = task_kind(task)
    return kind.noun(crispr_only), kind.integrity(adata)[2]


def sandbox_blind(run, adata, task: str) -> Check:
    """The sandbox's training data holds no cell of what the test asks about: a test perturbation,
    or (unseen cell context) a test context."""
    meta = load_meta(run.sandbox_data)
    with np.load(run.sandbox_data / "train.npz") as z:
        n_train, train_ctx = len(z["X"]), {meta["contexts"][int(i)] for i in np.unique(z["context"])}
    leaked = task_kind(task).leaked(meta, train_ctx)
    expected = int((adata.obs[SPLIT] == "train").sum())
    ok = not leaked and n_train == expected
    return Check(name="sandbox_saw_no_test_targets", passed=ok,
                 detail=f"sandbox training data: {n_train} cells, all from the train split" if ok
                 else f"test targets in sandbox data: {sorted(leaked)[:5]}; {n_train} vs {expected} train cells")


def provenance(t: TestScored, sandbox_sha: str | None, now: str) -> Check:
    """The scored test predictions are byte-for-byte the file the sandbox wrote: the sha256 the
    sandbox recorded (on the node's record), the one the Evaluator scored, and the file now."""
    ok = sandbox_sha is not None and sandbox_sha == t.predictions.sha256 == now
    return Check(name="provenance", passed=ok,
                 detail=f"scored file sha256 {now[:12]} matches the sandbox's output" if ok
                 else f"sandbox wrote {str(sandbox_sha)[:12]}, scored {t.predictions.sha256[:12]}, on disk {now[:12]}")


def ensemble_provenance(t: TestScored, tree: Tree, nodes_dir: Path, now: str) -> Check:
    """The scored test predictions are the ensemble the host built: each member's prediction is
    the file its sandbox wrote (sha256 on its tree record), the scored file is their weighting by
    the recorded weights (recomputed here), and it is the file the host recorded and the
    Evaluator scored."""
    ens = tree.ensemble
    recorded = ens.predictions.get("test") if ens else None
    problems = verify_ensemble(tree, nodes_dir, nodes_dir.parent / t.predictions.path)
    if not (recorded is not None and recorded == t.predictions.sha256 == now):
        problems.append(f"host wrote {str(recorded)[:12]}, scored {t.predictions.sha256[:12]}, on disk {now[:12]}")
    return Check(name="provenance", passed=not problems,
                 detail=(f"scored file sha256 {now[:12]} is {ens.label()} of the members' predictions, "
                         "each the file its sandbox wrote") if not problems else "; ".join(problems))


def picked_backend(nodes) -> str | None:
    """The sandbox backend behind a pick: an unisolated member's, if any (the weakest wall)."""
    backends = [n.backend for n in nodes]
    return next((b for b in backends if not is_isolated(b)), backends[0] if backends else None)


def isolation_check(backend: str | None) -> Check:
    """Whether the selected node ran behind a wall. Not an integrity check (the builtin
    templates' code may run unwalled where no wall exists) but said in the verdict and report."""
    ok = is_isolated(backend)
    return Check(name="sandbox_isolation", passed=ok,
                 detail=f"the selected node ran in the {backend} sandbox" if ok else
                 f"UNISOLATED: the selected node ran on the {backend} backend, a plain child process "
                 "that could read and write anything the user can")


def trust_lines(backend: str | None, head: TranscriptHead) -> str:
    """The report's lines on isolation and the transcript anchor."""
    iso = ("isolated" if is_isolated(backend) else "**UNISOLATED** (no wall: the code could read the "
           "run folder, held-out targets included)")
    return (f"\n## Trust\n\n- Sandbox of the selected node: {backend or 'none'}, {iso}\n"
            f"- Transcript head: `{head.hash}` ({head.records} records); check a copy with "
            f"`harmonycell replay RUN --verify --anchor {head.hash}`\n")


class Judge(StepAgent):
    description_text = "Checks provenance, split integrity and that the result is not fabricated."

    def on_TestScored(self, t: TestScored) -> Verdict:
        run, cfg = self.ctx.run, self.ctx.config
        tree = self.ctx.search_tree()  # each node's record: its backend, attempts, the sandbox's sha256s
        picked = tree.picked_nodes(t.node_id)  # the node, or the ensemble's members
        adata = self.ctx.cache.get("adata") or ad.read_h5ad(run.unified)
        checks = [split_integrity(adata, cfg.task), sandbox_blind(run, adata, cfg.task)]
        if t.node_id is None:
            checks.append(Check(name="provenance", passed=False, detail="no node trained successfully"))
        else:
            now = atomic.sha256_file(run.root / t.predictions.path)
            checks.append(ensemble_provenance(t, tree, run.nodes_dir, now) if t.node_id == ENSEMBLE_ID
                          else provenance(t, picked[0].predictions.get("test") if picked else None, now))
            # the ensemble's own step is the host's weighting: the code that ran is its members'
            problems = [f"{n.id}: {p}" if len(picked) > 1 else p for n in picked
                        for p in check_code((run.node_dir(n.id) / "model.py").read_text())]
            checks.append(Check(name="code_is_clean", passed=bool(picked) and not problems,
                                detail="model code reads no files, network or processes" if not problems
                                else "; ".join(problems)))
            checks += self._beats(t)
        backend = picked_backend(picked)
        if picked:
            checks.append(isolation_check(backend))
        valid = all(c.passed for c in checks if c.name in INTEGRITY) and t.node_id is not None
        useful, deciding = usefulness(t.comparisons)
        useful = useful and valid  # an invalid result is never presented as useful
        unit, n_units = held_out_unit(adata, cfg.task)
        failed = [c.name for c in checks if c.name in INTEGRITY and not c.passed]
        if t.node_id is None:
            failed = ["no node trained"] + failed
        metric = next(iter(deciding.values())).metric if deciding else SEARCH_METRIC
        line = headline_text(valid=valid, useful=useful, failed=failed, deciding=deciding,
                             n_queries=t.n_queries, unit=unit, n_units=n_units, metric=metric,
                             notes=decidability(metric, deciding, t.baselines.get(NOISE_CEILING, {}),
                                                t.n_queries))
        if backend is not None and not is_isolated(backend):
            line += f" -- UNISOLATED: the selected node ran on {backend}, without a sandbox wall"
        unify = json.loads((run.unify_dir / "unify_report.json").read_text()) if (run.unify_dir / "unify_report.json").exists() else {}
        fallbacks = {}
        if (run.root / "baselines.json").exists():
            fallbacks = json.loads((run.root / "baselines.json").read_text()).get("fallbacks", {})
        text = render_report(
            run_id=cfg.run_id, task=cfg.task, inputs=[i.path for i in cfg.inputs],
            unify_line=f"{adata.n_obs} cells x {adata.n_vars} genes after unification"
            + (f" ({unify.get('summary')})" if unify.get("summary") else ""),
            tree=tree, best=t.node_id, best_action=tree.describe(t.node_id),
            test_metrics=t.metrics, baselines=t.baselines,
            checks=[c.model_dump() for c in checks], valid=valid, headline=line, unit=unit,
            comparisons=[c.model_dump() for c in t.comparisons], fallbacks=fallbacks,
            split_info=unify.get("split_info") or {}, gene_selection=unify.get("gene_selection") or {})
        if t.node_id is not None and t.scores is not None:
            scores = json.loads((run.root / t.scores.path).read_text())
            plot_report(run.root / "report.png", t.metrics, t.baselines, scores["per_perturbation"],
                        tree, run.nodes_dir)
            text += "\n![model vs baselines, per perturbation, training curves](report.png)\n"
        text += report_addendum(self.ctx, t.node_id, text)  # advisory only: `valid` is decided above
        # the head after the addendum's LLM calls (if any): the anchor pins them too
        head = TranscriptHead(**dict(zip(("hash", "records"), self.ctx.transcript.head())))
        text += trust_lines(backend, head)
        atomic.write_text(run.report_md, text)
        verdict = Verdict(valid=valid, useful=useful, headline=line, checks=checks,
                          comparisons=t.comparisons,
                          report=Artifact(**self.ctx.artifact(run.report_md).model_dump()),
                          backend=backend, isolated=is_isolated(backend) if backend else None,
                          transcript_head=head)
        atomic.write_text(run.root / "verdict.json", verdict.model_dump_json(indent=2))
        write_report_html(run.root)
        return verdict

    @staticmethod
    def _beats(t: TestScored) -> list[Check]:
        """One check per baseline and metric, passed only when the paired interval says
        ``better`` (a difference without an interval is not a win)."""
        out = []
        for c in t.comparisons:
            if c.metric not in (SEARCH_METRIC, FALLBACK_METRIC, "DeltaPCC", "RMSE"):
                continue
            suffix = {SEARCH_METRIC: "_headline", FALLBACK_METRIC: "_headline_fallback", "DeltaPCC": "",
                      "RMSE": "_rmse"}[c.metric]
            ci = ("no interval" if c.ci_low is None
                  else f"95% sign-flip interval [{c.ci_low:+.3f}, {c.ci_high:+.3f}], Holm p {c.p_holm:.3g}")
            out.append(Check(name=f"beats_{c.baseline}{suffix}", passed=c.conclusion == "better",
                             detail=f"{c.metric} model - {c.baseline}: {c.mean_diff:+.3f}, {ci}, "
                                    f"n={c.n}: {c.conclusion}"))
        return out
