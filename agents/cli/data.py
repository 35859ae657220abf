"""CLI commands for the data side: ``harmonycell audit`` and ``harmonycell unify``.

Plain functions with typer options, registered by the main CLI (``agents/cli.py``):
``app.command("audit")(cli_data.audit)`` and ``app.command("unify")(cli_data.unify)``. ``app``
below is a stand-alone sub-app with the same two commands (used by the tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from harmonycell.tools.errors import HarmonyCellError


def fail(e: HarmonyCellError) -> None:
    typer.echo(f"error: {e.one_line()}", err=True)
    raise typer.Exit(2)


def audit(
    file: Path = typer.Argument(..., help="an .h5ad file"),
    json_: bool = typer.Option(False, "--json", help="print the audit as JSON instead of Markdown"),
    out: Optional[Path] = typer.Option(None, "--out", help="also write OUT/audit/<name>.md and .json"),
) -> None:
    """Profile one .h5ad file: shape, X fingerprint (counts or logs?), obs columns, gene ids."""
    from harmonycell.tools.record import atomic
    from harmonycell.tools.data.audit import audit_h5ad

    try:
        report = audit_h5ad(file)
    except HarmonyCellError as e:
        fail(e)
    if out is not None:
        atomic.write_text(out / "audit" / f"{report.name}.md", report.to_markdown())
        atomic.write_text(out / "audit" / f"{report.name}.json", report.model_dump_json(indent=2) + "\n")
    typer.echo(report.model_dump_json(indent=2) if json_ else report.to_markdown())


def unify(
    files: List[Path] = typer.Argument(..., help="one or more .h5ad files"),
    out: Path = typer.Option(..., "--out", help="output folder: unified.h5ad, mapping/, unify_report.json"),
    task: Optional[str] = typer.Option(None, "--task", help="unseen-perturbation | unseen-cell-context | unseen-combination"),
    seed: int = typer.Option(0, "--seed", help="seed of the split"),
    n_hvg: int = typer.Option(2000, "--n-hvg", help="highly variable genes kept"),
    spec_dir: Optional[Path] = typer.Option(None, "--specs", help="folder of <stem>.json mapping specs to use (validated and repaired)"),
) -> None:
    """Unify heterogeneous .h5ad files into one canonical dataset (no manual mapping)."""
    from harmonycell.tools.errors import InputError
    from harmonycell.tools.data.mapping import MappingSpec
    from harmonycell.tools.schema import TaskKind
    from harmonycell.tools.data.unify import unify as run_unify
    from harmonycell.tools.data.unify import write_unify_outputs

    try:
        kind = TaskKind.parse(task) if task else None
        specs = {}
        if spec_dir is not None:
            if not spec_dir.is_dir():
                raise InputError("spec folder not found", where=str(spec_dir), fix="pass a folder of <stem>.json specs")
            for p in sorted(spec_dir.glob("*.json")):
                try:
                    specs[p.stem] = MappingSpec.model_validate_json(p.read_text())
                except ValueError as e:
                    raise InputError(f"not a valid mapping spec ({str(e).splitlines()[0]})", where=str(p),
                                     fix="check it against tools/mapping_spec.schema.json") from None
        outcome = run_unify(list(files), task=kind, seed=seed, n_hvg=n_hvg, specs=specs or None)
        write_unify_outputs(outcome, out)
    except HarmonyCellError as e:
        fail(e)
    r = outcome.report
    for i in r.inputs:
        typer.echo(f"{i.dataset_id}: {i.controls} controls, {i.perturbed} perturbed, {i.dropped} dropped, "
                   f"{i.conditions} conditions, {'log' if i.already_log else 'counts->log1p'}, genes {i.gene_id_type}")
    typer.echo(f"wrote {out / 'unified.h5ad'}: {r.n_cells} cells x {r.n_genes} genes, {r.perturbations} perturbations"
               + (f", task {r.task} (seed {r.seed})" if r.task else ""))


app = typer.Typer(add_completion=False, help="HarmonyCell data commands")
app.command("audit")(audit)
app.command("unify")(unify)

if __name__ == "__main__":  # pragma: no cover
    app()
