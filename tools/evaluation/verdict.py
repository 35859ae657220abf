"""The merit verdict of one prediction matrix: scored, compared with every baseline, judged.

The Judge's ``useful`` and ``harmonycell score --compare`` read the same two functions
(``compare.compare_all`` over the per-query rows, then ``compare.usefulness``); this module
assembles them for a prediction that did not come from a run (bring your own predictions) and
adds what a single number cannot say: the noise ceiling beside the model, and why a split
could not decide.
"""

from __future__ import annotations

from anndata import AnnData
from pydantic import BaseModel

from harmonycell.tools.evaluation.baselines import compute_baselines
from harmonycell.tools.evaluation.ceiling import NOISE_CEILING
from harmonycell.tools.evaluation.compare import Comparison, compare_all, usefulness
from harmonycell.tools.evaluation.metrics import HEADLINE_CHANCE, HIGHER_IS_BETTER, SEARCH_METRIC, ScoreReport
from harmonycell.tools.evaluation.pseudobulk import targets_for
from harmonycell.tools.evaluation.scoring import score_prediction_file

# A noise ceiling this close to chance: the held-out cells barely tell their perturbations apart.
LITTLE_SIGNAL_MARGIN = 0.1


class MeritVerdict(BaseModel):
    """What ``harmonycell score --compare --json`` prints (top-level keys fixed by issue 26)."""

    valid: bool  # the file fits the task (shape, order, finite): it was scored
    useful: bool  # better than every applicable baseline on the deciding metric
    headline: str
    headline_metric: str
    higher_is_better: bool
    aggregate: dict[str, float | None]  # every metric of the prediction
    baselines: dict[str, dict[str, float | None]]  # every baseline's, and the noise ceiling's
    comparisons: list[Comparison]
    predictions_sha256: str | None = None


def decidability(metric: str, deciding: dict[str, Comparison], ceiling: dict[str, float | None],
                 n_queries: int) -> list[str]:
    """What the data could decide, for a headline: a split too small to conclude anything (and
    the ``--folds`` that would), and a noise ceiling near chance (little predictable signal)."""
    notes = []
    applies = [c for c in deciding.values() if c.conclusion != "not applicable"]
    if deciding and (not applies or all(c.conclusion == "too few units" for c in applies)):
        notes.append(f"this split cannot decide ({n_queries} held-out queries); run "
                     "`harmonycell run ... --folds 5` to test every unit once")
    top = ceiling.get(SEARCH_METRIC)
    if metric == SEARCH_METRIC and top is not None and top - HEADLINE_CHANCE < LITTLE_SIGNAL_MARGIN:
        notes.append(f"the noise ceiling is itself near chance ({top:.3f} vs {HEADLINE_CHANCE}): "
                     "the data hold little predictable signal")
    elif ceiling.get(metric) is not None:
        notes.append(f"noise ceiling {ceiling[metric]:.3f}")
    return notes


def headline_sentence(useful: bool, metric: str, deciding: dict[str, Comparison],
                      ceiling: dict[str, float | None], n_queries: int) -> str:
    """One line: the verdict on ``metric``, per baseline, and what the data could decide."""
    parts = ", ".join(f"{b}: {c.conclusion}" for b, c in sorted(deciding.items()))
    verdict = "BETTER THAN EVERY BASELINE" if useful else "NOT BETTER THAN BASELINES"
    notes = decidability(metric, deciding, ceiling, n_queries)
    return f"{verdict} on {metric} ({parts or 'no baseline'}" + "".join(f"; {n}" for n in notes) + ")"


def judge_report(report: ScoreReport, adata: AnnData, split: str = "test") -> MeritVerdict:
    """The verdict of an already scored prediction against the baselines of ``split``."""
    t = targets_for(adata, split)
    base = compute_baselines(adata, split, t)
    comparisons = compare_all([r.model_dump() for r in report.per_perturbation],
                              {n: [r.model_dump() for r in rows] for n, rows in base.per_query.items()})
    useful, deciding = usefulness(comparisons)
    metric = next(iter(deciding.values())).metric if deciding else SEARCH_METRIC
    return MeritVerdict(
        valid=True, useful=useful,
        headline=headline_sentence(useful, metric, deciding, base.baselines.get(NOISE_CEILING, {}),
                                   report.n_queries),
        headline_metric=metric, higher_is_better=HIGHER_IS_BETTER[metric],
        aggregate=dict(report.aggregate), baselines=base.baselines, comparisons=comparisons,
        predictions_sha256=report.predictions_sha256)


def judge_file(adata: AnnData, path, split: str = "test") -> MeritVerdict:
    """Validate, score and judge a (queries, genes) .npy for ``split`` of a unified task."""
    return judge_report(score_prediction_file(adata, split, path), adata, split)
