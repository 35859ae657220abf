"""`harmonycell baselines TASK_DIR [--json]`: the baselines of a unified task, scored on the host.

Register in agents/cli.py with ``app.command("baselines")(cli_eval.baselines)``.
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


def render_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    names = list(report.baselines)
    table = Table(title=f"Baselines on the {report.split} split: {report.n_queries} queries, "
                        f"{report.n_genes} genes, {len(report.contexts)} context(s)")
    table.add_column("metric")
    for n in names:
        table.add_column(n, justify="right")
    for metric in next(iter(report.baselines.values())):
        table.add_row(metric, *[_fmt(report.baselines[n][metric]) for n in names])
    console = Console()
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
    from harmonycell.tools import atomic
    from harmonycell.tools.baselines import compute_baselines

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


if __name__ == "__main__":
    app()
