"""`harmonycell train TASK_DIR --action PATH [--backend ...] [--json]`: train one search node.

The node's code comes from the Coder (builtin templates, or an LLM when --llm-config is given),
is carried exactly as a search node is (``agents.node_run``: executor, Debugger, host scoring,
sha256 check) in a node run of its own, and is scored on the host beside the baselines of the same
split -- never from numbers the model reports about itself.

Register in agents/cli/main.py with ``app.command("train")(cli_train.train)``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from functools import partial
from pathlib import Path

import typer
from rich.console import Console
from pydantic import BaseModel, Field

from harmonycell.agents.cli.evaluation import load_task
from harmonycell.agents.cli.progress import node_progress
from harmonycell.tools.errors import HarmonyCellError

SHOWN = ("Discrimination_score", "DeltaPCC", "PCC_Delta_shift_corrected", "Cosine_delta", "RMSE")


class TrainReport(BaseModel):
    action: str
    status: str
    backend: str
    policy: str
    fell_back: bool = False
    wall_s: float
    cpu_s: float | None = None
    train_seconds: float | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    n_params: int | None = None
    peak_gpu_mem_bytes: int | None = None
    attempts: int = 1  # sandbox runs, the Debugger's re-runs included
    node_dir: str
    run_dir: str  # the node run: task.yaml, transcript, tree.json, nodes/<id>/
    split: str = "test"
    metrics: dict[str, float | None] = Field(default_factory=dict)
    val_metrics: dict[str, float | None] = Field(default_factory=dict)
    baselines: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    predictions_sha256: str | None = None
    notes: list[str] = Field(default_factory=list)
    error_tail: str | None = None


def train_node(task, action: str, out: Path, *, backend: str = "local", seed: int = 0,
               data_dir: Path | None = None, gene_sets: Path | None = None, llm=None,
               timeout_s: float = 3600.0, epochs: int = 100, with_test: bool = True,
               **context) -> TrainReport:
    """Carry ``action`` as the one node of a node run at ``out`` (``agents.node_run``: the
    search's carrier -- Coder, executor, Debugger, host scoring, sha256 check) on ``task`` (a
    unified AnnData or .h5ad), and report its validation and test scores beside the baselines."""
    from harmonycell.agents.node_run import carry_action, open_node_run
    from harmonycell.tools.record.transcript import read_records
    from harmonycell.tools.search.actions import parse_action

    path = parse_action(action)  # bad paths fail here, before any data is written
    path.spec  # a paradigm alone is not trainable: raises, listing its backbones
    ctx = open_node_run(out, task, backend=backend, seed=seed, epochs=epochs, node_timeout_s=timeout_s,
                        llm=llm.model_dump(mode="json") if llm is not None else None,
                        gene_sets=gene_sets, data_dir=data_dir, **context)
    done = carry_action(ctx, path.text(), with_test=with_test)
    coder = next((r["content"] for r in read_records(ctx.run.transcript)
                  if r["kind"] == "event" and r["type"] == "write_model_outcome"), {})
    node = ctx.search_tree().nodes[done.node_id]
    report = TrainReport(action=node.action, status="ok" if done.ok else "failed", backend=node.backend or backend,
                         policy=coder.get("policy", "builtin"), fell_back=bool(coder.get("fell_back")),
                         notes=list(coder.get("notes", [])), attempts=node.attempts,
                         wall_s=round(node.wall_s or 0.0, 2), cpu_s=node.cpu_s, node_dir=str(done.node_dir),
                         run_dir=str(done.run.root), val_metrics=node.metrics,
                         error_tail=None if done.ok else node.error_tail)
    hr = done.node_dir / "harness_result.json"
    if hr.exists():
        h = json.loads(hr.read_text())
        report = report.model_copy(update={k: h.get(k) for k in (
            "train_seconds", "epochs_run", "best_epoch", "n_params", "peak_gpu_mem_bytes")})
    if done.test is not None:
        report.metrics = done.test.metrics
        report.baselines = done.test.baselines
        report.predictions_sha256 = done.test.predictions.sha256 if done.test.predictions else None
    return report


def _fmt(v) -> str:
    return "null" if v is None else f"{v:.4f}"


def render(report: TrainReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    who = report.policy + (" (LLM fell back)" if report.fell_back else "")
    console.print(f"{report.action}: {report.status} on {report.backend} in {report.wall_s:.1f} s "
                  f"(epochs {report.epochs_run}, best {report.best_epoch}, coder {who})")
    if report.error_tail:
        console.print(report.error_tail)
    table = Table(title=f"{report.split} split: model beside the baselines (scored on the host)")
    table.add_column("metric")
    table.add_column("model", justify="right")
    for name in report.baselines:
        table.add_column(name, justify="right")
    for m in SHOWN:
        table.add_row(m, _fmt(report.metrics.get(m)),
                      *[_fmt(b.get(m)) for b in report.baselines.values()])
    console.print(table)
    for n in report.notes:
        console.print(f"note: {n}")


def train(
    task_dir: Path = typer.Argument(..., help="task folder with unified.h5ad (from `harmonycell unify --task`)"),
    action: str = typer.Option(..., "--action", help="action path, e.g. discriminative/resnet/hparams:lr=3e-4"),
    backend: str = typer.Option("auto", "--backend", help="sandbox backend: auto (docker, else bwrap), docker, bwrap or unsafe-local"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    seed: int = typer.Option(0, "--seed"),
    gene_sets: Path | None = typer.Option(None, "--gene-sets", help="GMT/JSON gene sets for pathway-masked"),
    out: Path | None = typer.Option(None, "--out", help="the node run's folder: its transcript, tree and "
                                   "nodes/<id>/ (default: a temporary folder)"),
    llm_config: Path | None = typer.Option(None, "--llm-config",
                                           help="JSON {base_url, model, api_key_env}: let an LLM write the code"),
    timeout: float = typer.Option(3600.0, "--timeout", help="seconds before the node is killed"),
) -> None:
    """Train one node of the action space through the sandbox and score it beside the baselines."""
    try:
        from harmonycell.agents.policies.llm import load_llm_config
        from harmonycell.tools.search.actions import parse_action

        parse_action(action)  # fail fast, before reading the task
        llm = load_llm_config(llm_config) if llm_config else None
        adata = load_task(task_dir)
        root = out or Path(tempfile.mkdtemp(prefix="harmonycell-train-")) / "run"
        err = Console(stderr=True)
        report = train_node(adata, action, root, backend=backend, seed=seed, gene_sets=gene_sets, llm=llm,
                            timeout_s=timeout, console=err, progress=partial(node_progress, err))
    except HarmonyCellError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        render(report)
    if report.status != "ok":
        raise typer.Exit(1)


app = typer.Typer(add_completion=False)
app.command("train")(train)

if __name__ == "__main__":
    app()
