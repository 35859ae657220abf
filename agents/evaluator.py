"""Evaluator: scores sandbox predictions on the host, never trusting the model's own numbers."""

from __future__ import annotations

import anndata as ad

from harmonycell.agents.base import StepAgent
from harmonycell.agents.messages import Artifact, NodeExecuted, NodeScored, SearchDone, SearchReviewed, TestScored
from harmonycell.tools.record import atomic
from harmonycell.tools.search import tree as T
from harmonycell.tools.evaluation.baselines import compute_baselines
from harmonycell.tools.evaluation.compare import compare_all
from harmonycell.tools.evaluation.metrics import SEARCH_METRIC, headline_of
from harmonycell.tools.errors import PredictionError
from harmonycell.tools.evaluation.scoring import score_prediction_file
from harmonycell.tools.evaluation.pseudobulk import targets_for
from harmonycell.tools.data.taskdata import load_meta, queries_from_meta


class Evaluator(StepAgent):
    description_text = "Scores predictions on the host (validation reward, final test, baselines)."

    def adata(self):
        if "adata" not in self.ctx.cache:
            self.ctx.cache["adata"] = ad.read_h5ad(self.ctx.run.unified)
        return self.ctx.cache["adata"]

    def targets(self, split: str):
        key = f"targets_{split}"
        if key not in self.ctx.cache:
            self.ctx.cache[key] = targets_for(self.adata(), split)
        return self.ctx.cache[key]

    def _score(self, split: str, path: str):
        meta = load_meta(self.ctx.run.sandbox_data)
        return score_prediction_file(self.adata(), split, self.ctx.run.root / path, queries_from_meta(meta, split),
                                     genes=meta["genes"], targets=self.targets(split))

    def on_NodeExecuted(self, ex: NodeExecuted) -> NodeScored:
        execution = {"backend": ex.backend, "attempts": ex.attempts, "predictions": ex.predictions}
        if not load_meta(self.ctx.run.sandbox_data)["queries"]["val"]:
            # nothing held out for validation (e.g. a tiny dataset): the node ran, but the search
            # cannot rank it; say so rather than invent a score
            self.ctx.transcript.append("event", self.name, "no_validation_split",
                                       {"node": ex.node_id, "effect": "no validation score: reward 0, nodes are not ranked"})
            return NodeScored(node_id=ex.node_id, metrics={"wall_s": ex.wall_s},
                              reward=T.reward(None, ex.wall_s, None), **execution)
        pred = ex.predictions["val"]
        report = self._score("val", pred.path)
        if report.predictions_sha256 != pred.sha256:
            raise PredictionError("predictions changed after the sandbox wrote them",
                                  where=pred.path, fix="re-run the node; do not edit node outputs")
        m = dict(report.aggregate)
        # cost in CPU seconds (load-independent); wall time only where the backend gave none
        cost = ex.cpu_s if ex.cpu_s is not None else ex.wall_s
        t_root = self.ctx.search_tree().t_root or cost
        # the reward reads the headline (its declared fallback where it is undefined)
        metric, value = headline_of(m)
        r = T.reward(T.normalised_metric(value, metric), cost, t_root)
        m["wall_s"], m["cpu_s"] = ex.wall_s, ex.cpu_s
        m["train_mean_val"] = self._train_mean_val()
        self.ctx.tool_call(self.name, "score_predictions", {"node": ex.node_id, "split": "val"},
                           {SEARCH_METRIC: m.get(SEARCH_METRIC), "DeltaPCC": m.get("DeltaPCC"),
                            "RMSE": m.get("RMSE"), "train_mean_val": m["train_mean_val"],
                            "sha256": report.predictions_sha256})
        return NodeScored(node_id=ex.node_id, metrics=m, reward=r, **execution)

    def _train_mean_val(self) -> float | None:
        """The train-mean baseline's search metric on validation (failure routing's yardstick)."""
        if "train_mean_val" not in self.ctx.cache:
            base = compute_baselines(self.adata(), "val").baselines
            self.ctx.cache["train_mean_val"] = base.get("train_mean", {}).get(SEARCH_METRIC)
        return self.ctx.cache["train_mean_val"]

    def on_SearchReviewed(self, done: SearchReviewed) -> TestScored:
        """Chat mode: the person has seen the search's result and sent it on to the test."""
        return self.on_SearchDone(done)

    def on_SearchDone(self, done: SearchDone) -> TestScored:
        run = self.ctx.run
        baselines = compute_baselines(self.adata(), "test", self.targets("test"))
        atomic.write_text(run.root / "baselines.json", baselines.model_dump_json(indent=2))
        base = baselines.baselines
        self.ctx.tool_call(self.name, "compute_baselines", {"split": "test"},
                           {name: {SEARCH_METRIC: v.get(SEARCH_METRIC), "DeltaPCC": v.get("DeltaPCC"),
                                   "RMSE": v.get("RMSE")} for name, v in base.items()},
                           [self.ctx.artifact(run.root / "baselines.json")])
        if done.best_node is None:
            return TestScored(node_id=None, baselines=base, n_queries=baselines.n_queries)
        # the file as scored now; the Judge holds its sha256 against the one the sandbox recorded
        path = self.ctx.rel(run.node_dir(done.best_node) / "pred_test.npy")
        report = self._score("test", path)
        pred = Artifact(path=path, sha256=report.predictions_sha256)
        scores_path = run.node_dir(done.best_node) / "test_scores.json"
        atomic.write_text(scores_path, report.model_dump_json(indent=2))
        scores = self.ctx.artifact(scores_path)
        self.ctx.tool_call(self.name, "score_predictions", {"node": done.best_node, "split": "test"},
                           {SEARCH_METRIC: report.aggregate.get(SEARCH_METRIC),
                            "DeltaPCC": report.aggregate.get("DeltaPCC"), "sha256": report.predictions_sha256},
                           [scores])
        # paired per query, model minus each baseline, exact sign-flip test (Holm over the baselines)
        comparisons = compare_all([r.model_dump() for r in report.per_perturbation],
                                  {n: [r.model_dump() for r in rows] for n, rows in baselines.per_query.items()})
        self.ctx.tool_call(self.name, "compare_with_baselines", {"split": "test", "n": report.n_queries},
                           {f"{c.baseline}/{c.metric}": c.conclusion for c in comparisons})
        return TestScored(node_id=done.best_node, metrics=dict(report.aggregate), baselines=base,
                          predictions=pred, scores=Artifact(**scores.model_dump()),
                          comparisons=comparisons, n_queries=report.n_queries)
