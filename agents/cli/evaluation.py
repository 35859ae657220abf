"""Host-side evaluation commands.

- ``harmonycell baselines TASK_DIR [--json]``: the baselines of a unified task;
- ``harmonycell score TASK_DIR PRED.npy [--split test] [--json]``: score a predictions file
  (rows in the task's query order, columns in its gene order) exactly as the Evaluator does;
  with ``--compare``, also judge it as the Judge does (``tools.evaluation.verdict``): paired
  comparisons with every baseline, the noise ceiling beside it, ``useful``.

Register in agents/cli/main.py with ``app.command("baselines")(cli_eval.baselines)`` and
``app.command("score")(cli_eval.score)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from harmonycell.tools.errors import HarmonyCellError, InputError

app = typer.Typer(add_completion=False, help="Host-side evaluation: baselines and scores.")

UNIFIED = "unified.h5ad"


def load_task(task_dir: Path):
    """The canonical AnnData of a task folder (or a .h5ad path given directly)."""
    import anndata

    path = task_dir / UNIFIED if task_dir.is_dir() else task_dir
    if not path.exists():
        raise InputError(f"no {UNIFIED} here", where=str(task_dir),
                         fix="pass a folder made by `harmonycell unify --task ...`")
    try:
        adata = anndata.read_h5ad(path)
    except Exception as exc:  # h5py/anndata raise many kinds for a damaged file
        raise InputError(f"cannot read ({type(exc).__name__}: {exc})", where=str(path),
                         fix="re-run `harmonycell unify --task ...`") from None
    if "split" not in adata.obs:
        raise InputError("has no obs['split']: it was unified without a task", where=str(path),
                         fix="re-run `harmonycell unify` with --task")
    return adata


def _fmt(v) -> str:
    return "null" if v is None else f"{v:.4f}"


def wide_console():
    """A console at least ``MIN_WIDTH`` wide: names are looked up verbatim, so a narrow
    terminal wraps lines rather than truncating a metric or baseline name."""
    from rich.console import Console

    return Console(width=max(Console().width, MIN_WIDTH))


MIN_WIDTH = 132


def render_table(report) -> None:
    from rich.table import Table

    names = list(report.baselines)
    table = Table(title=f"Baselines on the {report.split} split: {report.n_queries} queries, "
                        f"{report.n_genes} genes, {len(report.contexts)} context(s)")
    metrics = list(next(iter(report.baselines.values())))
    table.add_column("metric", no_wrap=True)
    for n in names:
        table.add_column(n, justify="right")
    for metric in metrics:
        table.add_row(metric, *[_fmt(report.baselines[n][metric]) for n in names])
    console = wide_console()
    console.print(table)
    for name, fb in report.fallbacks.items():
        if fb.n:
            console.print(f"{name}: {fb.n} of {fb.of} queries fell back to train_mean ({fb.why})")
    console.print("null = undefined (e.g. a correlation with a prediction of no change).")


@app.command("baselines")
def baselines(
    task_dir: Path = typer.Argument(..., help="task folder with unified.h5ad (from `harmonycell unify --task`)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    split: str = typer.Option("test", help="split to score: test or val"),
    out: Path | None = typer.Option(None, help="also write the JSON report here (atomically)"),
) -> None:
    """Score the control-mean, train-mean, linear (and additive) baselines of a task."""
    from harmonycell.tools.record import atomic
    from harmonycell.tools.evaluation.baselines import compute_baselines

    try:
        report = compute_baselines(load_task(task_dir), split=split)
    except HarmonyCellError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        raise typer.Exit(2) from None
    payload = report.model_dump(mode="json")
    if out is not None:
        atomic.write_json(out, payload)
    if as_json:
        print(json.dumps(payload, indent=2))
    else:
        render_table(report)


@app.command("score")
def score(
    task_dir: Path = typer.Argument(..., help="task folder with unified.h5ad"),
    predictions: Path = typer.Argument(..., help=".npy of shape (queries, genes), e.g. a node's pred_test.npy"),
    split: str = typer.Option("test", help="split the predictions are for: test or val"),
    compare: bool = typer.Option(False, "--compare", help="also compare with every baseline and "
                                 "give the Judge's verdict (useful or not)"),
    as_json: bool = typer.Option(False, "--json", help="print the full report as JSON"),
) -> None:
    """Score a predictions file against the held-out targets (validated first; sha256 recorded)."""
    from harmonycell.tools.evaluation.scoring import score_prediction_file

    adata = None
    try:
        adata = load_task(task_dir)
        report = score_prediction_file(adata, split, predictions)
    except HarmonyCellError as exc:
        if compare and as_json and adata is not None:  # the file, not the task, is at fault
            from harmonycell.tools.evaluation.metrics import HIGHER_IS_BETTER, SEARCH_METRIC
            print(json.dumps({"valid": False, "useful": False, "headline": f"INVALID: {exc.one_line()}",
                              "headline_metric": SEARCH_METRIC,
                              "higher_is_better": HIGHER_IS_BETTER[SEARCH_METRIC],
                              "aggregate": {}, "comparisons": []}, indent=2))
        else:
            print(f"error: {exc.one_line()}", file=sys.stderr)
        raise typer.Exit(2) from None
    if compare:
        from harmonycell.tools.evaluation.verdict import judge_report

        verdict = judge_report(report, adata, split)
        if as_json:
            print(verdict.model_dump_json(indent=2))
        else:
            _render_verdict(verdict)
        return
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{predictions.name} on the {split} split: {report.n_queries} queries, "
                        f"{report.n_genes} genes (sha256 {report.predictions_sha256[:12]})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("null for", justify="right")
    for metric, value in report.aggregate.items():
        table.add_row(metric, _fmt(value), str(report.null_counts.get(metric, 0) or ""))
    Console().print(table)


def _render_verdict(verdict) -> None:
    from rich.table import Table

    names = list(verdict.baselines)
    table = Table(title=verdict.headline)
    table.add_column("metric")
    table.add_column("prediction", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    for metric, value in verdict.aggregate.items():
        table.add_row(metric, _fmt(value), *[_fmt(verdict.baselines[n].get(metric)) for n in names])
    rows = Table(title="prediction - baseline, paired per query (exact sign-flip test, Holm)")
    for col in ("baseline", "metric", "n", "difference", "p (Holm)", "conclusion"):
        rows.add_column(col)
    for c in verdict.comparisons:
        rows.add_row(c.baseline, c.metric, str(c.n), _fmt(c.mean_diff), _fmt(c.p_holm), c.conclusion)
    console = wide_console()
    console.print(table)
    console.print(rows)


if __name__ == "__main__":
    app()
