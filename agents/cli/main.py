"""The ``harmonycell`` command line: run, demo, replay (and the tools' own commands)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from functools import partial
from typing import List, Optional, Sequence

import typer
from rich.markup import escape
from rich.prompt import Prompt

from harmonycell.agents.cli import data as cli_data, evaluation as cli_eval, kb as cli_kb, sandbox as cli_sandbox, train as cli_train
from harmonycell.agents.cli import plan as cli_plan
from harmonycell.agents.cli import predict as cli_predict
from harmonycell.agents.cli import report as cli_report
from harmonycell.agents.cli.chat import converse
from harmonycell.agents.cli.drive import Person, console, drive, err
from harmonycell.agents.policies.llm import load_llm_config
from harmonycell.agents.cli.replay import replay, rerun as rerun_run
from harmonycell.sandbox.engine import reap_run_sandboxes
from harmonycell.sandbox.backends import HELP as BACKEND_HELP
from harmonycell.tools.record import atomic
from harmonycell.tools.errors import HarmonyCellError, InputError
from harmonycell.tools.record.runfolder import RunFolder, create_run
from harmonycell.tools.record.transcript import Transcript
from harmonycell.tools.tasks.registry import DEFAULT_KIND, kind_names, task_kind
from harmonycell.tools.evaluation.metrics import SEARCH_METRIC
from harmonycell.tools.search.budget import DEFAULT_TIME_LIMIT

SPECS_HELP = "folder of <dataset>.json mapping specs to use (validated and repaired); `audit --write-spec` writes one"
app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Predict single-cell perturbation responses from heterogeneous .h5ad files.")


TIME_LIMIT_HELP = "wall-clock limit of the search, e.g. 45m, 1h30m, 90s (a bare number is minutes); 'none': no limit"
KB_HELP = "knowledge base file (SQLite); default: the user's data directory"


def search_options(budget: int, time_limit: str | None, kb: Path | None, no_kb: bool) -> dict:
    """The search's budget and knowledge-base options of run, demo and chat, checked."""
    from harmonycell.tools.search.budget import parse_duration

    if kb is not None and no_kb:
        raise InputError("--kb and --no-kb contradict each other", where="--kb/--no-kb",
                         fix="pass one of them")
    return {"budget_nodes": budget, "time_limit_s": parse_duration(time_limit), "use_kb": not no_kb,
            "kb_path": str(kb.expanduser().resolve()) if kb else None}


WORKERS_HELP = "nodes trained at once, each in its own sandbox with its share of the cores (and GPUs); default: 1 locally, the cluster's CPUs on Ray"
EXECUTOR_HELP = "where nodes train: local (this machine) | ray (a Ray cluster; pip install 'harmonycell[ray]')"
RAY_ADDRESS_HELP = "with --executor ray: the cluster's address (host:port, as `ray start --head` prints); none: a local Ray instance for the run"


def scale_options(workers: int | None, executor: str, ray_address: str | None) -> dict:
    """How many nodes at once and where, checked before anything is written."""
    from harmonycell.sandbox.executors import EXECUTORS

    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}", where="--executor", fix=f"use one of: {', '.join(EXECUTORS)}")
    if ray_address and executor != "ray":
        raise InputError("--ray-address is for the Ray executor", where="--ray-address",
                         fix="add --executor ray, or drop --ray-address")
    return {"workers": workers, "executor": executor, "ray_address": ray_address}


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
    from harmonycell.tools.data.audit import write_audit
    from harmonycell.tools.data.validate import door

    task_kind(task)
    specs = options.get("specs_dir")
    checked = door(files, out, task=task, specs_dir=Path(specs) if specs else None, llm=bool(llm),
                   seed=options.get("seed"), budget=options.get("budget_nodes"), epochs=options.get("epochs"))
    for note in checked.notes:
        console.print(f"[dim]input {note}[/]", highlight=False)
    if specs:
        options["specs_dir"] = str(Path(specs).resolve())
    run = create_run(out, files, task, llm=llm, **options)
    for audit in checked.audits.values():  # the door's audits: the DataAuditor carries them
        write_audit(audit, run.audit_dir)
    transcript = Transcript(run.root)
    for kind, source, type_, content in opening:
        transcript.append(kind, source, type_, content)
    drive(run, person)
    return run


LLM_HELP = "JSON/YAML {provider, base_url, model, api_key_env, ...}: LLM policies for the agents"
MAX_TOKENS_HELP = "stop using the LLM (builtin policies) once the run has used this many tokens"
MAX_COST_HELP = "stop using the LLM once the run has cost this many USD (prices: PRICES or the config's prices)"


def control_specs_dir(files: list[Path], control: list[str] | None, specs: Path | None, out: Path) -> Path | None:
    """``--control LABEL``: the builtin specs with those controls, as the --specs folder of the run."""
    if not control:
        return specs
    from harmonycell.tools.data.mapping import write_control_specs

    cli_data.check_control_and_specs(control, specs)
    return write_control_specs(files, control, out)


@app.command()
def run(
    files: List[Path] = typer.Argument(..., help="input .h5ad files (any schema)"),
    task: str = typer.Option(DEFAULT_KIND, help=kind_names()),
    out: Path = typer.Option(Path("runs"), help="runs root; the run gets its own folder inside"),
    seed: int = typer.Option(0),
    budget: int = typer.Option(32, help="training nodes the search may run (with --time-limit: whichever ends first)"),
    time_limit: str = typer.Option(DEFAULT_TIME_LIMIT, "--time-limit", help=TIME_LIMIT_HELP),
    epochs: int = typer.Option(100, help="maximum epochs per node (early stopping applies)"),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    llm_config: Optional[Path] = typer.Option(None, "--llm-config", help=LLM_HELP),
    max_llm_tokens: Optional[int] = typer.Option(None, "--max-llm-tokens", min=1, help=MAX_TOKENS_HELP),
    max_llm_cost: Optional[float] = typer.Option(None, "--max-llm-cost", min=0.0, help=MAX_COST_HELP),
    kb: Optional[Path] = typer.Option(None, "--kb", help=KB_HELP),
    no_kb: bool = typer.Option(False, "--no-kb", help="neither read nor write the knowledge base"),
    folds: int = typer.Option(1, min=1, help="K >= 2: nested K-fold cross-validation over held-out units "
                                             "(the whole search runs inside each fold); 1 = one split"),
    repeats: int = typer.Option(1, min=1, help="with --folds: repeat the K folds with seeds seed..seed+R-1"),
    compare_sources: bool = typer.Option(False, "--compare-sources",
                                         help="with 2+ inputs: also train the selected architecture on each "
                                              "source alone and compare with the union, per source's test queries"),
    specs: Optional[Path] = typer.Option(None, "--specs", help=SPECS_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help=WORKERS_HELP),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    control: Optional[List[str]] = typer.Option(None, "--control", help=cli_data.CONTROL_HELP),
) -> None:
    """Scripted, autonomous run: audit -> unify -> search -> evaluate -> judge -> report."""
    if folds == 1 and repeats > 1:
        raise InputError("--repeats needs --folds K (K >= 2)", where="--repeats",
                         fix="add --folds 5, or drop --repeats")
    if compare_sources and len(files) < 2:
        raise InputError("--compare-sources needs two or more inputs", where="--compare-sources",
                         fix="pass several .h5ad files, or drop --compare-sources")
    if compare_sources and folds > 1:
        raise InputError("--compare-sources runs on a single split", where="--compare-sources",
                         fix="drop --folds, or run --compare-sources separately")
    specs = control_specs_dir(files, control, specs, out)
    options = dict(epochs=epochs, backend=backend, specs_dir=specs, **search_options(budget, time_limit, kb, no_kb),
                   **scale_options(workers, executor, ray_address))
    if folds > 1:
        from harmonycell.agents.cli.crossval import run_folds

        llm = load_llm_config(llm_config, max_tokens_total=max_llm_tokens,
                              max_cost_usd=max_llm_cost).model_dump() if llm_config else None
        parent, line = run_folds(files, task, out, folds, repeats, seed, drive, llm=llm, **options)
        console.print(f"cross-validation report: {parent / 'report.md'}")
        console.print(f"\n[bold]{line}[/]", highlight=False, soft_wrap=True)
        return
    run_folder = start(files, task, out, llm_config, max_llm_tokens=max_llm_tokens, max_llm_cost=max_llm_cost,
                       seed=seed, **options)
    if compare_sources:
        from harmonycell.agents.cli.sources import compare_sources as by_source

        for s in by_source(run_folder):
            deciding = next((c for c in s.comparisons if c.metric == SEARCH_METRIC), None)
            console.print(f"union vs {s.source} alone: " + (
                f"{deciding.conclusion} (union - single {deciding.mean_diff:+.3f}, n={deciding.n})"
                if deciding else s.status), highlight=False)
        headline = json.loads((run_folder.root / "verdict.json").read_text()).get("headline", "")
        console.print(f"\n[bold]{headline}[/]", highlight=False, soft_wrap=True)  # still the last line


@app.command()
def chat(
    files: Optional[List[Path]] = typer.Argument(None, help="input .h5ad files (asked for when omitted)"),
    task: Optional[str] = typer.Option(None, help="task kind (asked for when omitted)"),
    out: Path = typer.Option(Path("runs"), help="runs root"),
    budget: int = typer.Option(2, help="training nodes (you may change it when approving the search)"),
    time_limit: Optional[str] = typer.Option(None, "--time-limit", help=TIME_LIMIT_HELP),
    epochs: int = typer.Option(100, help="maximum epochs per node"),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    llm_config: Optional[Path] = typer.Option(None, "--llm-config", help="LLM policies (see `run`)"),
    max_llm_tokens: Optional[int] = typer.Option(None, "--max-llm-tokens", min=1, help=MAX_TOKENS_HELP),
    max_llm_cost: Optional[float] = typer.Option(None, "--max-llm-cost", min=0.0, help=MAX_COST_HELP),
    kb: Optional[Path] = typer.Option(None, "--kb", help=KB_HELP),
    no_kb: bool = typer.Option(False, "--no-kb", help="neither read nor write the knowledge base"),
    specs: Optional[Path] = typer.Option(None, "--specs", help=SPECS_HELP),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help=WORKERS_HELP),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    control: Optional[List[str]] = typer.Option(None, "--control", help=cli_data.CONTROL_HELP),
) -> None:
    """A conversation in the terminal: say what you want in your words, ask questions at any
    turn, steer the search, and ask about the result."""
    ask = lambda q: Prompt.ask(f"[bold yellow]you[/] {escape(q)}", console=console, default="", show_default=False)
    opts = search_options(budget, time_limit, kb, no_kb)  # checked before anything is asked
    if control and not files:
        raise InputError("--control names labels in the input files, but no file was given", where="--control",
                         fix="name the .h5ad files on the command line with --control")
    specs = control_specs_dir(files or [], control, specs, out)
    opts.update(scale_options(workers, executor, ray_address))
    opts.pop("budget_nodes")  # the person may size the search in words; --budget is the default
    llm = load_llm_config(llm_config, max_tokens_total=max_llm_tokens, max_cost_usd=max_llm_cost) if llm_config else None
    converse(files, task, ask, console, partial(start, out=out, llm_config=llm_config, max_llm_tokens=max_llm_tokens,
                                                max_llm_cost=max_llm_cost), llm=llm,
             budget=budget, epochs=epochs, backend=backend, specs_dir=specs, **opts)


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
    transcript = Transcript(run.root)  # refuses a damaged chain before anything is written
    reaped = reap_run_sandboxes(run.config().run_id)
    run.set_status("running")
    transcript.append("event", "harmonycell", "resumed",
                      {"previous": status.model_dump() if status else None, "reaped_containers": reaped})
    drive(run)


@app.command()
def demo(out: Path = typer.Option(Path("runs"), help="runs root"),
         seed: int = typer.Option(0),
         backend: str = typer.Option("auto", help=BACKEND_HELP),
         budget: int = typer.Option(3, min=1, help="training nodes (small: the demo should take about a minute)"),
         time_limit: Optional[str] = typer.Option(None, "--time-limit", help=TIME_LIMIT_HELP),
         kb: Optional[Path] = typer.Option(None, "--kb", help=KB_HELP),
         no_kb: bool = typer.Option(False, "--no-kb", help="neither read nor write the knowledge base"),
         workers: Optional[int] = typer.Option(None, "--workers", min=1, help=WORKERS_HELP),
         executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
         ray_address: Optional[str] = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP)) -> None:
    """Generate synthetic data in two lab schemas and run the whole pipeline on it."""
    from harmonycell.tools.data.synthetic import SimConfig, write_synthetic

    options = search_options(budget, time_limit, kb, no_kb)  # checked before anything is written
    options.update(scale_options(workers, executor, ray_address))
    data_dir = out / "demo-data"
    paths = write_synthetic(data_dir, SimConfig(seed=seed))
    console.print(f"synthetic inputs: {', '.join(str(p) for p in paths)}")
    # sized so that the whole demo (three nodes searched) takes about a minute on 2 idle cores
    start(paths, DEFAULT_KIND, out, seed=seed, epochs=60, backend=backend, **options)


@app.command("replay")
def replay_cmd(run_dir: Path = typer.Argument(..., help="a run folder"),
               verify: bool = typer.Option(False, "--verify", help="check the hash chain and artifacts"),
               anchor: Optional[str] = typer.Option(None, "--anchor", help="with --verify: the transcript "
                                                    "head hash from verdict.json / report.md"),
               rerun: bool = typer.Option(False, "--rerun", help="re-execute the run in a fresh folder "
                                          "(same inputs, seeds, configuration) and compare every decision and metric"),
               out: Optional[Path] = typer.Option(None, "--out", help="with --rerun: runs root for the "
                                                  "re-execution (default: reruns/ beside the run)")) -> None:
    """Verify a run's transcript, re-render its conversation, or re-execute it (--rerun)."""
    if rerun:
        raise typer.Exit(rerun_run(run_dir, out, console))
    raise typer.Exit(replay(run_dir, verify=verify, console=console, anchor=anchor))


app.command("audit")(cli_data.audit)
app.command("unify")(cli_data.unify)
app.command("baselines")(cli_eval.baselines)
app.command("score")(cli_eval.score)
app.command("train")(cli_train.train)
app.command("plan")(cli_plan.plan)
app.command("predict")(cli_predict.predict)
app.command("report")(cli_report.report)
app.command("runs")(cli_report.runs)
app.add_typer(cli_sandbox.app, name="sandbox")
app.add_typer(cli_kb.app, name="kb")


def main() -> None:
    try:
        run_cli()
    except SystemExit as exc:
        from harmonycell.tools.data.unify import BROKEN_WRITES

        if BROKEN_WRITES:  # see BROKEN_WRITES: skip the finalisation that would crash
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        raise


def run_cli() -> None:
    try:
        # with standalone_mode=False click returns a command's exit code instead of exiting
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except HarmonyCellError as exc:
        err.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False)
        sys.exit(2)
    except OSError as exc:  # disk full, read-only or vanished output: the environment, not a bug
        import errno

        full = exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM, errno.EFBIG)
        # h5py reports a failed write as OSError without errno, the cause in its text
        words = ("No space left", "File too large", "Read-only file system", "Disk quota", "Permission denied")
        if not full and not any(w in str(exc) for w in words):
            raise
        why = exc.strerror or next((w for w in words if w in str(exc)), str(exc)[:120])
        err.print(f"[bold red]error:[/] {exc.filename or 'output'}: cannot write ({why}) -- free space or choose "
                  "another --out; the run is marked failed and nothing half-written is kept", highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        if isinstance(exc, _usage_errors()):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def _usage_errors() -> tuple[type, ...]:
    """Click's usage-error types: typer 0.2x raises those of the click it vendors, not click's."""
    import click

    types: list[type] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:
        pass
    else:
        types.append(VendoredClickException)
    return tuple(types)


if __name__ == "__main__":
    main()
