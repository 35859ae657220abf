"""`harmonycell sandbox ...`: check, build and run code in the sandbox.

Register with: ``app.add_typer(cli_sandbox.app, name="sandbox")``.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import typer

from harmonycell.tools.errors import HarmonyCellError, InputError

app = typer.Typer(name="sandbox", help="Run generated code in an isolated sandbox (Docker, or bubblewrap).",
                  no_args_is_help=True)


def _fail(err: HarmonyCellError) -> None:
    typer.echo(f"error: {err.one_line()}", err=True)
    raise typer.Exit(2)


def _warn(msg: str) -> None:
    typer.secho(f"WARNING: {msg}", fg=typer.colors.YELLOW, err=True, bold=True)


@app.command()
def check(
    image: Optional[str] = typer.Option(None, help="Image name (default harmonycell-sandbox:latest)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    require_docker: bool = typer.Option(False, "--require-docker",
                                        help="Exit 2 unless the Docker backend is usable (for CI)."),
) -> None:
    """Which backend `auto` uses, the engine version, the image, and the GPU."""
    from harmonycell.sandbox.check import check as run_check

    rep = run_check(image)
    if json_out:
        typer.echo(rep.model_dump_json(indent=2))
    else:
        typer.echo(f"backend (auto): {rep.backend}")
        typer.echo(f"engine:         {'docker ' + rep.engine_version if rep.engine_ok else 'none -- ' + str(rep.engine_problem)}")
        typer.echo(f"image:          {rep.image} " + (f"{rep.image_id} (inputs {str(rep.image_inputs)[:12]})"
                                                     if rep.image_id else f"-- {rep.image_problem or 'unknown'}"))
        typer.echo(f"bwrap:          {'ready' if rep.bwrap_ok else rep.bwrap_problem}")
        typer.echo(f"gpu:            docker {'yes (nvidia runtime)' if rep.docker_gpu else 'no'}; "
                   f"host torch {'cuda' if rep.host_gpu else 'cpu only'}")
        if rep.fix:
            typer.echo(f"to fix:         {rep.fix}")
    if rep.backend == "none":
        _warn("no isolating sandbox here (neither docker nor bwrap): runs stop unless given "
              "--backend unsafe-local, which does not isolate the network or files")
    if require_docker and not rep.docker_ready:
        typer.echo(f"error: the Docker sandbox is not ready -- {rep.fix}", err=True)
        raise typer.Exit(2)


@app.command()
def build(
    base: Optional[str] = typer.Option(None, help="A local base image with python3 (e.g. a CUDA PyTorch "
                                                  "image on a GPU host); default: Debian made with debootstrap."),
    wheelhouse: Optional[Path] = typer.Option(None, help="Wheel cache (default ~/.cache/harmonycell/wheelhouse)."),
    image: Optional[str] = typer.Option(None, help="Image name (default harmonycell-sandbox:latest)."),
    mirror: Optional[str] = typer.Option(None, help="Debian mirror for debootstrap (default: "
                                                 "$HARMONYCELL_DEBIAN_MIRROR, else the host's apt sources)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the inputs did not change."),
) -> None:
    """Build the sandbox image offline (no registry); does nothing when it is up to date."""
    from harmonycell.sandbox.image import build_image

    try:
        res = build_image(base=base, wheelhouse=wheelhouse, image=image, mirror=mirror, force=force,
                          log=lambda m: typer.echo(m))
    except HarmonyCellError as err:
        _fail(err)
    typer.echo(f"{res.image} {'built' if res.built else 'up to date'} in {res.seconds} s "
               f"(id {res.image_id[:19]}, base {res.base}, inputs {res.inputs_hash[:12]})")


@app.command()
def run(
    script: Path = typer.Argument(..., help="Python file to run; its current directory is a fresh writable folder."),
    backend: str = typer.Option("auto", help="auto (docker, else bwrap) | docker | bwrap | unsafe-local"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="Label the job with a run id (docker: reaped by `resume`)."),
    timeout: float = typer.Option(600.0, help="Seconds before the run is killed."),
    memory: str = typer.Option("4g", help="Memory limit, e.g. 512m or 8g."),
    cpus: Optional[float] = typer.Option(None, help="CPU limit (cores)."),
    pids: int = typer.Option(512, help="Most processes/threads the code may have."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--no-gpu", help="Require / forbid a GPU (default: use one if present)."),
    workdir: Optional[Path] = typer.Option(None, help="The writable folder (default: a new temporary one)."),
    json_out: bool = typer.Option(False, "--json", help="Print the ExecutionResult as JSON."),
) -> None:
    """Run SCRIPT in the sandbox and print the ExecutionResult (exit 1 unless status is ok)."""
    from harmonycell.sandbox.backends import SandboxFallbackWarning, get_backend
    from harmonycell.sandbox.result import Job

    try:
        if not script.is_file():
            raise InputError(f"no such script {script}", where="sandbox run",
                             fix="give the path of an existing .py file")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SandboxFallbackWarning)
            be = get_backend(backend)
        for w in caught:
            _warn(str(w.message))
        folder = workdir or Path(tempfile.mkdtemp(prefix="harmonycell-sandbox-"))
        if folder.exists() and any(folder.iterdir()):
            raise InputError(f"the folder {folder} is not empty", where="--workdir",
                             fix="give a new or empty folder; the script's outputs are listed from it")
        job = Job(command=[], workdir=folder, inputs={"script": script.resolve()}, timeout_s=timeout,
                  memory=memory, cpus=cpus, pids=pids, gpu=gpu, run_id=run_id)
        job.command = [be.python(), be.input_path(job, "script")]
        result = be.run(job)
    except HarmonyCellError as err:
        _fail(err)
    if json_out:
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(f"status:  {result.status} (exit {result.exit_code}) in {result.wall_s} s on {result.backend}"
                   + ("" if result.isolated else " (UNISOLATED)"))
        typer.echo(f"folder:  {folder}")
        for o in result.outputs:
            typer.echo(f"output:  {o.path} {o.bytes} B sha256 {o.sha256[:16]}")
        if result.stdout_tail:
            typer.echo("--- stdout (tail) ---\n" + result.stdout_tail.rstrip())
        if result.stderr_tail:
            typer.echo("--- stderr (tail) ---\n" + result.stderr_tail.rstrip())
    sys.stdout.flush()
    raise typer.Exit(0 if result.ok else 1)
