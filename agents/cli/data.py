"""CLI commands for the data side: ``harmonycell audit`` and ``harmonycell unify``.

Plain functions with typer options, registered by the main CLI (``agents/cli.py``):
``app.command("audit")(cli_data.audit)`` and ``app.command("unify")(cli_data.unify)``. ``app``
below is a stand-alone sub-app with the same two commands (used by the tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from harmonycell.tools.errors import HarmonyCellError, InputError, SpecError
from harmonycell.tools.tasks.registry import kind_names, task_kind


def fail(e: HarmonyCellError) -> None:
    typer.echo(f"error: {e.one_line()}", err=True)
    raise typer.Exit(2)


CONTROL_HELP = "the label of the control cells, where the Unifier does not recognise it (repeat for several)"


def check_control_and_specs(control, specs) -> None:
    if control and specs:
        raise InputError("--control and --specs both say which cells are controls", where="--control",
                         fix="name the controls in the specs' control_labels, or drop --specs")


def audit(
    file: Path = typer.Argument(..., help="an .h5ad file"),
    json_: bool = typer.Option(False, "--json", help="print the audit as JSON instead of Markdown"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write OUT/audit/<name>.md and .json"),
    write_spec: Optional[Path] = typer.Option(None, "--write-spec",
                                              help="write the mapping spec the Unifier would use to DIR/<name>.json "
                                                   "(edit it, then pass DIR to --specs)"),
) -> None:
    """Profile one .h5ad file and say what the Unifier will do with it, and why."""
    from harmonycell.tools.data.audit import audit_h5ad, read_obs_var_backed
    from harmonycell.tools.data.mapping import explain
    from harmonycell.tools.data.validate import check_out_dir
    from harmonycell.tools.record import atomic

    try:
        for d, opt in ((out, "--out"), (write_spec, "--write-spec")):
            if d is not None:
                check_out_dir(d, option=opt)
        report = audit_h5ad(file)
        obs, var = read_obs_var_backed(file)
        plan, spec = explain(report, obs, var)
        if write_spec is not None and spec is None:
            raise SpecError("no spec to write: the builtin policy cannot map this file (see the audit above)",
                            where=str(file), fix="write the spec by hand against tools/data/mapping_spec.schema.json")
    except HarmonyCellError as e:
        fail(e)
    if out is not None:
        atomic.write_text(out / "audit" / f"{report.name}.md", report.to_markdown() + plan)
        atomic.write_text(out / "audit" / f"{report.name}.json", report.model_dump_json(indent=2) + "\n")
    typer.echo(report.model_dump_json(indent=2) if json_ else report.to_markdown() + plan)
    if write_spec is not None and spec is not None:
        path = atomic.write_text(write_spec / f"{report.name}.json", spec.model_dump_json(indent=2) + "\n")
        typer.echo(f"wrote {path}: edit it, then pass --specs {write_spec} to unify, run or chat", err=json_)


def unify(
    files: List[Path] = typer.Argument(..., help="one or more .h5ad files"),
    out: Path = typer.Option(..., "--out", help="output folder: unified.h5ad, mapping/, unify_report.json"),
    task: Optional[str] = typer.Option(None, "--task", help=kind_names()),
    seed: int = typer.Option(0, "--seed", help="seed of the split"),
    n_hvg: int = typer.Option(2000, "--n-hvg", help="highly variable genes kept"),
    spec_dir: Optional[Path] = typer.Option(None, "--specs", help="folder of <stem>.json mapping specs to use (validated and repaired)"),
    control: Optional[List[str]] = typer.Option(None, "--control", help=CONTROL_HELP),
) -> None:
    """Unify heterogeneous .h5ad files into one canonical dataset (no manual mapping)."""
    from harmonycell.tools.data.mapping import control_specs
    from harmonycell.tools.data.unify import unify as run_unify
    from harmonycell.tools.data.unify import write_unify_outputs
    from harmonycell.tools.data.validate import (
        FREE_SPACE_FACTOR, check_files, check_options, check_out_dir, check_unify_out, load_specs,
    )

    try:
        kind = task_kind(task).name if task else None
        check_options(n_hvg=n_hvg, seed=seed)
        check_files(list(files))
        check_out_dir(out, FREE_SPACE_FACTOR * sum(Path(f).stat().st_size for f in files))
        note = check_unify_out(out)
        check_control_and_specs(control, spec_dir)
        specs = control_specs(list(files), control) if control else load_specs(spec_dir)
        outcome = run_unify(list(files), task=kind, seed=seed, n_hvg=n_hvg, specs=specs or None)
        try:
            write_unify_outputs(outcome, out)
        except OSError as e:  # disk full, file-size limit, read-only: the staged outputs are gone
            why = e.strerror or str(e).splitlines()[0][:160]
            raise InputError(f"cannot write the outputs ({why}); nothing was kept", where=f"--out {out}",
                             fix="free disk space or choose another folder") from None
    except HarmonyCellError as e:
        fail(e)
    if note:
        typer.echo(note)
    r = outcome.report
    for i in r.inputs:
        typer.echo(f"{i.dataset_id}: {i.controls} controls, {i.perturbed} perturbed, {i.dropped} dropped, "
                   f"{i.conditions} conditions, {'log' if i.already_log else 'counts->log1p'} ({i.scale}), "
                   f"genes {i.gene_id_type} ({i.species})")
    for kind_, merges in r.harmonised.items():
        for a, b in merges.items():
            typer.echo(f"merged {kind_[:-1].replace('_', ' ')} {a!r} into {b!r}")
    typer.echo(f"wrote {out / 'unified.h5ad'}: {r.n_cells} cells x {r.n_genes} genes, {r.perturbations} perturbations"
               + (f", task {r.task} (seed {r.seed})" if r.task else ""))


app = typer.Typer(add_completion=False, help="HarmonyCell data commands")
app.command("audit")(audit)
app.command("unify")(unify)

if __name__ == "__main__":  # pragma: no cover
    app()
