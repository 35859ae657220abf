"""``harmonycell report`` (a run's report.html) and ``harmonycell runs`` (list and compare runs)."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from harmonycell.tools.errors import InputError
from harmonycell.tools.report.html import test_metrics
from harmonycell.tools.report.publish import write_compare_html, write_report_html
from harmonycell.tools.report.rundata import find_runs, load_run

console = Console()


def report(run_dir: Path = typer.Argument(..., help="a run folder, e.g. runs/<run-id>"),
           open_: bool = typer.Option(False, "--open", help="open the page in the default browser"),
           mlflow: bool = typer.Option(False, "--mlflow", help="also log every node as an MLflow run"),
           mlflow_uri: str = typer.Option("mlruns", "--mlflow-uri",
                                          help="MLflow tracking URI, or a folder for a local file store")) -> None:
    """Regenerate report.html from the run folder alone (self-contained, works offline)."""
    out = write_report_html(run_dir)
    console.print(f"report: {out}")
    # typer cannot give an option an optional value (--mlflow [URI]), hence two options
    if mlflow:
        from harmonycell.tools.report.mlflow_export import export_run

        uri, n = export_run(load_run(run_dir), mlflow_uri)
        console.print(f"mlflow: {n} node run(s) logged to {uri}")
    if open_:
        webbrowser.open(out.resolve().as_uri())


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def list_runs(root: Path) -> Table:
    table = Table(title=f"runs in {root}", header_style="bold")
    for col in ("run", "state", "task", "inputs", "selected path", "verdict", "test DeltaPCC", "time", "LLM tokens"):
        table.add_column(col, overflow="fold", no_wrap=col in ("run", "test DeltaPCC", "time"))
    for path in find_runs(root):
        r = load_run(path)
        v = r.verdict or {}
        verdict = ("[green]VALID[/]" if v.get("valid") else "[red]INVALID[/]") if v else "-"
        if "useful" in v:
            verdict += " " + ("[green]useful[/]" if v["useful"] else "[yellow]not useful[/]")
        dpcc = test_metrics(r)[0].get("DeltaPCC")
        tokens = r.llm_tokens()
        table.add_row(r.run_id, str((r.status or {}).get("state", "-")), str(r.task.get("task", "-")),
                      ", ".join(Path(str(i.get("path", ""))).stem for i in r.task.get("inputs") or []),
                      r.selected_path or "-", verdict, "-" if dpcc is None else f"{dpcc:.3f}",
                      _duration(r.wall_s), "-" if tokens is None else str(tokens))
    return table


def runs(args: Optional[List[str]] = typer.Argument(None, help="[ROOT] to list runs (default: runs), "
                                                               "or: compare RUN RUN ... to compare them"),
         out: Path = typer.Option(Path("runs-compare.html"), help="compare: the page to write"),
         open_: bool = typer.Option(False, "--open", help="compare: open the page in the default browser")) -> None:
    """List runs (task, inputs, selected path, verdicts, time, LLM tokens), or compare runs on one page."""
    args = list(args or [])
    if args and args[0] == "compare":
        folders = [Path(a) for a in args[1:]]
        if len(folders) < 2:
            raise InputError("compare needs two or more run folders", fix="harmonycell runs compare runs/A runs/B")
        page = write_compare_html(folders, out)
        console.print(f"comparison of {len(folders)} runs: {page}")
        if open_:
            webbrowser.open(page.resolve().as_uri())
        return
    if len(args) > 1:
        raise InputError(f"one runs root expected, got {len(args)} arguments",
                         fix="harmonycell runs [ROOT], or harmonycell runs compare RUN RUN ...")
    # a table of runs wants room: piped output (no terminal to fit) gets 160 columns, not 80
    out = console if console.is_terminal else Console(width=160)
    out.print(list_runs(Path(args[0]) if args else Path("runs")))
