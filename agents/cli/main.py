"""The ``harmonycell`` command line: run, demo, replay (and the tools' own commands)."""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path
from functools import partial
from typing import Callable, List, Optional, Sequence

import typer
from rich.console import Console
from rich.markup import escape
from rich.prompt import Prompt

from harmonycell.agents.cli import data as cli_data, evaluation as cli_eval, sandbox as cli_sandbox, train as cli_train
from harmonycell.agents.cli import plan as cli_plan
from harmonycell.agents.cli.chat import converse
from harmonycell.agents.context import RunContext
from harmonycell.agents.policies.llm import LLMConfig, load_llm_config
from harmonycell.agents.messages import RunRequest
from harmonycell.agents.cli.replay import replay
from harmonycell.agents.team import build_team, run_team
from harmonycell.sandbox.backends import SandboxFallbackWarning, get_backend
from harmonycell.tools.record import atomic
from harmonycell.tools.errors import HarmonyCellError, InputError
from harmonycell.tools.record.runfolder import RunFolder, create_run
from harmonycell.tools.record.transcript import Transcript

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Predict single-cell perturbation responses from heterogeneous .h5ad files.")
console = Console()
Person = Callable[[RunContext], object]  # chat mode: makes the User agent for a run's context
err = Console(stderr=True, soft_wrap=True)


def start(files: list[Path], task: str, out: Path, llm_config: Path | None = None,
          person: Person | None = None, opening: Sequence[tuple] = (), max_llm_tokens: int | None = None,
          max_llm_cost: float | None = None, **options) -> RunFolder:
    """Validate everything, create the run folder, and drive the team to the end.

    ``opening``: (kind, source, type, content) records that come first (chat: the person's request)."""
    if llm_config is None and (max_llm_tokens or max_llm_cost):
        raise InputError("--max-llm-tokens/--max-llm-cost limit an LLM, but no --llm-config was given",
                         fix="add --llm-config FILE, or drop the limits")
    llm = load_llm_config(llm_config, max_tokens_total=max_llm_tokens,
                          max_cost_usd=max_llm_cost).model_dump() if llm_config else None
    run = create_run(out, files, task, llm=llm, **options)
    transcript = Transcript(run.root)
    for kind, source, type_, content in opening:
        transcript.append(kind, source, type_, content)
    drive(run, person)
    return run


def drive(run: RunFolder, person: Person | None = None) -> None:
    """Run (or resume) the team on a prepared run folder; mark it failed or complete.

    With ``person`` (chat mode) the User agent it makes joins the team between the data and the
    search and between search rounds.
    """
    cfg = run.config()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SandboxFallbackWarning)
        backend = get_backend(cfg.backend)
    ctx = RunContext(run=run, config=cfg, transcript=Transcript(run.root), backend=backend,
                     console=console, llm=LLMConfig.model_validate(cfg.llm) if cfg.llm else None)
    if ctx.llm is not None:  # one session for all agents: one ledger, one budget
        from harmonycell.agents.policies.llm import session_for_run

        ctx.llm_session = session_for_run(ctx.llm, ctx.transcript)
    for w in caught:  # said loudly, and on the record
        err.print(f"[bold yellow]warning:[/] {w.message}")
        ctx.transcript.append("event", "harmonycell", "sandbox_warning", {"warning": str(w.message)})
    team = None
    if person is not None:
        from harmonycell.agents.routing import CHAT_PRODUCES, CHAT_ROUTES

        ctx.chat = True
        team = build_team(ctx, extra=[person(ctx)], routes=CHAT_ROUTES, produces=CHAT_PRODUCES)
    console.print(f"[bold]HarmonyCell[/] run [cyan]{cfg.run_id}[/] -> {run.root}")

    def interrupt(signum, frame):  # stop the sandbox job too, not just this process
        ctx.cancel.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    # agents' failures are re-raised as themselves and recorded in the transcript; the runtime's
    # own logging of the same errors (and of cancelled tasks after Ctrl-C) is noise here
    for name in ("autogen_core", "autogen_agentchat", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        verdict = run_team(ctx, RunRequest(inputs=[i.path for i in cfg.inputs], task=cfg.task.value,
                                           seed=cfg.seed), team)
    except BaseException as exc:
        if ctx.cancel.is_set():
            reason = "interrupted by the user; continue with `harmonycell resume`"
        elif isinstance(exc, HarmonyCellError):
            reason = exc.one_line()
        else:
            reason = f"{type(exc).__name__}: {exc}"
        ctx.transcript.append("event", "harmonycell", "run_failed", {"error": reason})
        run.set_status("failed", reason, llm=llm_totals(ctx))
        if ctx.cancel.is_set():
            err.print(f"run {cfg.run_id} {reason}")
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    run.set_status("complete", llm=llm_totals(ctx))
    console.print(f"\n[bold]{'VALID' if verdict.valid else 'INVALID'}[/] -- report: {run.report_md}")


def llm_totals(ctx: RunContext) -> dict | None:
    """The run's LLM calls, tokens, cost and latency (None: no LLM was configured)."""
    from harmonycell.agents.policies.llm import usage_summary

    return usage_summary(ctx.llm_session.usage) if ctx.llm_session is not None else None


LLM_HELP = "JSON/YAML {provider, base_url, model, api_key_env, ...}: LLM policies for the agents"
MAX_TOKENS_HELP = "stop using the LLM (builtin policies) once the run has used this many tokens"
MAX_COST_HELP = "stop using the LLM once the run has cost this many USD (prices: PRICES or the config's prices)"


@app.command()
def run(
    files: List[Path] = typer.Argument(..., help="input .h5ad files (any schema)"),
    task: str = typer.Option("unseen-perturbation", help="unseen-perturbation | unseen-cell-context | unseen-combination"),
    out: Path = typer.Option(Path("runs"), help="runs root; the run gets its own folder inside"),
    seed: int = typer.Option(0),
    budget: int = typer.Option(2, min=1, help="training nodes the search may run"),
    epochs: int = typer.Option(100, min=1, help="maximum epochs per node (early stopping applies)"),
    backend: str = typer.Option("auto", help="sandbox: docker | local | auto (docker when available)"),
    llm_config: Optional[Path] = typer.Option(None, "--llm-config", help=LLM_HELP),
    max_llm_tokens: Optional[int] = typer.Option(None, "--max-llm-tokens", min=1, help=MAX_TOKENS_HELP),
    max_llm_cost: Optional[float] = typer.Option(None, "--max-llm-cost", min=0.0, help=MAX_COST_HELP),
) -> None:
    """Scripted, autonomous run: audit -> unify -> search -> evaluate -> judge -> report."""
    start(files, task, out, llm_config, max_llm_tokens=max_llm_tokens, max_llm_cost=max_llm_cost,
          seed=seed, budget_nodes=budget, epochs=epochs, backend=backend)


@app.command()
def chat(
    files: Optional[List[Path]] = typer.Argument(None, help="input .h5ad files (asked for when omitted)"),
    task: Optional[str] = typer.Option(None, help="task kind (asked for when omitted)"),
    out: Path = typer.Option(Path("runs"), help="runs root"),
    budget: int = typer.Option(2, min=1),
    epochs: int = typer.Option(100, min=1),
    backend: str = typer.Option("auto", help="sandbox: docker | local | auto"),
    llm_config: Optional[Path] = typer.Option(None, "--llm-config", help="LLM policies (see `run`)"),
    max_llm_tokens: Optional[int] = typer.Option(None, "--max-llm-tokens", min=1, help=MAX_TOKENS_HELP),
    max_llm_cost: Optional[float] = typer.Option(None, "--max-llm-cost", min=0.0, help=MAX_COST_HELP),
) -> None:
    """A conversation in the terminal: say what you want in your words, ask questions at any
    turn, steer the search, and ask about the result."""
    ask = lambda q: Prompt.ask(f"[bold yellow]you[/] {escape(q)}", console=console, default="", show_default=False)
    llm = load_llm_config(llm_config, max_tokens_total=max_llm_tokens, max_cost_usd=max_llm_cost) if llm_config else None
    converse(files, task, ask, console, partial(start, out=out, llm_config=llm_config, max_llm_tokens=max_llm_tokens,
                                                max_llm_cost=max_llm_cost), llm=llm,
             budget=budget, epochs=epochs, backend=backend)


@app.command()
def resume(run_dir: Path = typer.Argument(..., help="a run folder left by a killed or failed run")) -> None:
    """Continue a killed or failed run: finished audits, unification and nodes are reused."""
    run = RunFolder(run_dir)
    if not run.task_yaml.exists():
        raise InputError("no task.yaml here", where=str(run_dir), fix="pass a run folder, e.g. runs/<run-id>")
    status = run.status()
    if status and status.state == "complete":
        raise InputError("this run is already complete", where=str(run_dir),
                         fix="start a new run with `harmonycell run`")
    for f in run.config().inputs:
        if atomic.sha256_file(f.path) != f.sha256:
            raise InputError("input changed since the run started", where=f.path,
                             fix="restore the original file or start a new run")
    run.set_status("running")
    Transcript(run.root).append("event", "harmonycell", "resumed", {"previous": status.model_dump() if status else None})
    drive(run)


@app.command()
def demo(out: Path = typer.Option(Path("runs"), help="runs root"),
         seed: int = typer.Option(0),
         backend: str = typer.Option("auto", help="sandbox: docker | local | auto")) -> None:
    """Generate synthetic data in two lab schemas and run the whole pipeline on it."""
    from harmonycell.tools.data.synthetic import SimConfig, write_synthetic

    data_dir = out / "demo-data"
    paths = write_synthetic(data_dir, SimConfig(seed=seed))
    console.print(f"synthetic inputs: {', '.join(str(p) for p in paths)}")
    # sized so that the whole demo (three nodes searched) takes about a minute on 2 idle cores
    start(paths, "unseen-perturbation", out, seed=seed, budget_nodes=3, epochs=60, backend=backend)


@app.command("replay")
def replay_cmd(run_dir: Path = typer.Argument(..., help="a run folder"),
               verify: bool = typer.Option(False, "--verify", help="check the hash chain and artifacts")) -> None:
    """Verify a run's transcript and re-render its conversation."""
    raise typer.Exit(replay(run_dir, verify=verify, console=console))


app.command("audit")(cli_data.audit)
app.command("unify")(cli_data.unify)
app.command("baselines")(cli_eval.baselines)
app.command("score")(cli_eval.score)
app.command("train")(cli_train.train)
app.command("plan")(cli_plan.plan)
app.add_typer(cli_sandbox.app, name="sandbox")


def main() -> None:
    try:
        # with standalone_mode=False click returns a command's exit code instead of exiting
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
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
