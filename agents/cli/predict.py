"""``harmonycell predict RUN --perturbation GENE [--perturbation A+B] [--from FILE] [--context CT]
[--out pred.h5ad] [--no-refit]``: the run's selected model answers perturbations nobody measured.

A thin layer over ``harmonycell.predict`` (the Python API): it parses, calls, prints a summary and
writes the AnnData. Refusals are ``InputError``s: one line and exit code 2, as everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from harmonycell.prediction import NOTICE, predict as predict_api, read_requests
from harmonycell.tools.record import atomic

TOP_GENES = 5


def predict(
    run_dir: Path = typer.Argument(..., help="a finished run folder (runs/<run-id>)"),
    perturbation: Optional[List[str]] = typer.Option(None, "--perturbation", "-p",
                                                     help="a gene (or alias) or a combination A+B; repeat for more"),
    from_file: Optional[Path] = typer.Option(None, "--from", help="a text file with one perturbation per line"),
    context: Optional[List[str]] = typer.Option(None, "--context",
                                                help="a context the run saw (cell type, or dataset|cell type); "
                                                     "default: every one"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the predictions here (.h5ad)"),
    no_refit: bool = typer.Option(False, "--no-refit", help="use the selected node as trained instead of "
                                  "refitting it on every labelled unit"),
) -> None:
    """Predict the response to perturbations nobody measured with the run's selected model."""
    console = Console()
    result = predict_api(run_dir, read_requests(perturbation, from_file), context, refit=not no_refit)
    info = result.uns["harmonycell"]
    model = info["model"]
    console.print(f"[bold]{NOTICE}[/]: node {model['node']} ({model['action']}) of run {info['run_id']}, "
                  f"{'refitted on every labelled unit' if model['refit'] else 'as trained'}; "
                  f"run verdict: {info['verdict']['headline']}", highlight=False, soft_wrap=True)
    for note in sorted({n for r in result.obs["resolution"] if r for n in r.split("; ")}):
        console.print(f"alias: {note}", highlight=False)
    table = Table(title=f"top {TOP_GENES} changed genes (prediction - control mean of the context)")
    for col in ("perturbation", "context", "source", "top changed genes"):
        table.add_column(col)
    symbols = result.var["gene_symbol"].astype(str).to_numpy() if "gene_symbol" in result.var else result.var_names
    for i, (name, row) in enumerate(result.obs.iterrows()):
        delta = result.layers["delta"][i]
        top = np.argsort(-np.abs(delta))[:TOP_GENES]
        table.add_row(row["condition_name"], row["context"], row["source"],
                      ", ".join(f"{symbols[g]} {delta[g]:+.2f}" for g in top))
    console.print(table)
    console.print(f"uncertainty: {info['uncertainty']}", highlight=False, soft_wrap=True)
    if out is not None:
        atomic.write_with(out, result.write_h5ad)
        console.print(f"predictions: {out}", highlight=False)
