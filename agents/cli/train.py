"""`harmonycell train TASK_DIR --action PATH [--backend ...] [--json]`: train one search node.

The node's code comes from the Coder (builtin templates, or an LLM when --llm-config is given),
runs through the sandbox, and is scored on the host by the Evaluator's functions beside the
baselines of the same split -- never from numbers the model reports about itself.

Register in agents/cli/main.py with ``app.command("train")(cli_train.train)``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, Field

from harmonycell.agents.cli.evaluation import load_task
from harmonycell.tools.errors import HarmonyCellError, PredictionError

SHOWN = ("Discrimination_score", "DeltaPCC", "PCC_Delta_shift_corrected", "Cosine_delta", "RMSE")


class TrainReport(BaseModel):
    action: str
    status: str
    backend: str
    policy: str
    fell_back: bool = False
    wall_s: float
    train_seconds: float | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    n_params: int | None = None
    peak_gpu_mem_bytes: int | None = None
    node_dir: str
    split: str = "test"
    metrics: dict[str, float | None] = Field(default_factory=dict)
    val_metrics: dict[str, float | None] = Field(default_factory=dict)
    baselines: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    predictions_sha256: str | None = None
    notes: list[str] = Field(default_factory=list)
    error_tail: str | None = None


def make_backend(name: str, allow_unwalled: bool = False):
    from harmonycell.sandbox.backends import get_backend

    return get_backend(name, allow_unwalled=allow_unwalled)


def train_node(adata, action: str, node_dir: Path, *, backend: str = "local", seed: int = 0,
               data_dir: Path | None = None, gene_sets: Path | None = None, llm=None,
               timeout_s: float = 3600.0, with_baselines: bool = True,
               config_overrides: dict[str, Any] | None = None) -> TrainReport:
    """Export (or reuse) the sandbox data, write the node's code, train it in the sandbox, and
    score its val/test predictions on the host beside the baselines."""
    from harmonycell.agents.policies.coder import CodeRequest, make_coder
    from harmonycell.sandbox.executors import LocalExecutor
    from harmonycell.sandbox.jobs import NodeJob
    from harmonycell.tools.search.actions import parse_action
    from harmonycell.tools.evaluation.baselines import compute_baselines
    from harmonycell.tools.evaluation.scoring import score_prediction_file
    from harmonycell.tools.data.taskdata import export_sandbox_data, load_meta

    path = parse_action(action)  # bad paths fail here, before any data is written
    path.spec  # a paradigm alone is not trainable: raises, listing its backbones
    be = make_backend(backend, allow_unwalled=llm is None)
    node_dir = Path(node_dir)
    if data_dir is None:
        data_dir = node_dir.parent / f"{node_dir.name}.data"
        export_sandbox_data(adata, data_dir)
    meta = load_meta(data_dir)
    symbols = list(adata.var["gene_symbol"].astype(str)) if "gene_symbol" in adata.var else None
    coder = make_coder(llm)
    mc = coder.write(CodeRequest(action=path.text(), data_dir=data_dir, seed=seed,
                                 gene_sets=gene_sets, gene_symbols=symbols))
    config = {**mc.config, **(config_overrides or {})}
    t0 = time.time()
    res, _ = LocalExecutor(be).run(NodeJob(node_id=node_dir.name, code=mc.code, config=config, data_dir=data_dir,
                                           node_dir=node_dir, timeout_s=timeout_s), worker=0)
    report = TrainReport(action=mc.action, status=res.status, backend=res.backend, policy=mc.policy,
                         fell_back=mc.fell_back, wall_s=round(res.wall_s or time.time() - t0, 2),
                         node_dir=str(node_dir), notes=mc.notes)
    hr = node_dir / "harness_result.json"
    if hr.exists():
        h = json.loads(hr.read_text())
        report = report.model_copy(update={k: h.get(k) for k in (
            "train_seconds", "epochs_run", "best_epoch", "n_params", "peak_gpu_mem_bytes")})
    if with_baselines:
        report.baselines = compute_baselines(adata, split="test").baselines
    if not res.ok or res.output("pred_test.npy") is None:
        report.status = res.status if not res.ok else "error"
        report.error_tail = (res.stderr_tail or res.stdout_tail)[-3000:]
        return report
    test = score_prediction_file(adata, "test", node_dir / "pred_test.npy",
                                 expected_queries=meta["queries"]["test"], genes=meta["genes"])
    if test.predictions_sha256 != res.output("pred_test.npy").sha256:
        raise PredictionError("predictions changed after the sandbox wrote them", where=str(node_dir / "pred_test.npy"),
                              fix="re-run the node; do not edit node outputs")
    report.metrics = test.aggregate
    report.predictions_sha256 = test.predictions_sha256
    if meta["queries"]["val"] and res.output("pred_val.npy") is not None:
        val = score_prediction_file(adata, "val", node_dir / "pred_val.npy",
                                    expected_queries=meta["queries"]["val"], genes=meta["genes"])
        report.val_metrics = val.aggregate
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
    out: Path | None = typer.Option(None, "--out", help="node folder (default: a temporary folder)"),
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
        node_dir = out or Path(tempfile.mkdtemp(prefix="harmonycell-train-")) / "node"
        report = train_node(adata, action, node_dir, backend=backend, seed=seed,
                            gene_sets=gene_sets, llm=llm, timeout_s=timeout)
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
