"""The ``harmonycell`` command line: run, demo, replay (and the tools' own commands)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from harmonycell.agents.context import RunContext
from harmonycell.agents.messages import RunRequest
from harmonycell.agents.replay import replay
from harmonycell.agents.team import run_team
from harmonycell.sandbox.local import LocalBackend
from harmonycell.tools.errors import HarmonyCellError
from harmonycell.tools.runfolder import create_run
from harmonycell.tools.transcript import Transcript

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Predict single-cell perturbation responses from heterogeneous .h5ad files.")
console = Console()
err = Console(stderr=True)


def execute(files: list[Path], task: str, out: Path, seed: int, budget: int, epochs: int) -> Path:
    run = create_run(out, files, task, seed=seed, budget_nodes=budget, epochs=epochs)
    cfg = run.config()
    ctx = RunContext(run=run, config=cfg, transcript=Transcript(run.root), backend=LocalBackend(),
                     console=console)
    console.print(f"[bold]HarmonyCell[/] run [cyan]{cfg.run_id}[/] -> {run.root}")
    try:
        verdict = run_team(ctx, RunRequest(inputs=[i.path for i in cfg.inputs], task=cfg.task.value,
                                           seed=seed))
    except BaseException as exc:
        reason = exc.one_line() if isinstance(exc, HarmonyCellError) else f"{type(exc).__name__}: {exc}"
        ctx.transcript.append("event", "harmonycell", "run_failed", {"error": reason})
        run.set_status("failed", reason)
        raise
    run.set_status("complete")
    console.print(f"\n[bold]{'VALID' if verdict.valid else 'INVALID'}[/] -- report: {run.report_md}")
    return run.root


@app.command()
def run(
    files: List[Path] = typer.Argument(..., help="input .h5ad files (any schema)"),
    task: str = typer.Option("unseen-perturbation", help="unseen-perturbation | unseen-cell-context | unseen-combination"),
    out: Path = typer.Option(Path("runs"), help="runs root; the run gets its own folder inside"),
    seed: int = typer.Option(0),
    budget: int = typer.Option(2, min=1, help="training nodes the search may run"),
    epochs: int = typer.Option(100, min=1, help="maximum epochs per node (early stopping applies)"),
) -> None:
    """Scripted, autonomous run: audit -> unify -> search -> evaluate -> judge -> report."""
    execute(files, task, out, seed, budget, epochs)


@app.command()
def demo(out: Path = typer.Option(Path("runs"), help="runs root"),
         seed: int = typer.Option(0)) -> None:
    """Generate synthetic data in two lab schemas and run the whole pipeline on it."""
    from harmonycell.tools.synthetic import SimConfig, write_synthetic

    data_dir = out / "demo-data"
    paths = write_synthetic(data_dir, SimConfig(seed=seed))
    console.print(f"synthetic inputs: {', '.join(str(p) for p in paths)}")
    execute(paths, "unseen-perturbation", out, seed, budget=2, epochs=60)


@app.command("replay")
def replay_cmd(run_dir: Path = typer.Argument(..., help="a run folder"),
               verify: bool = typer.Option(False, "--verify", help="check the hash chain and artifacts")) -> None:
    """Verify a run's transcript and re-render its conversation."""
    raise typer.Exit(replay(run_dir, verify=verify, console=console))


def main() -> None:
    try:
        app(standalone_mode=False)
    except HarmonyCellError as exc:
        err.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
