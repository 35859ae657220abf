"""Run one training node: the harness, a model module and its config, inside a backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harmonycell.sandbox.local import LocalBackend
from harmonycell.sandbox.result import ExecutionResult, Job

HARNESS = Path(__file__).with_name("harness.py")


def run_training(
    backend: LocalBackend,
    data_dir: Path,
    model_code: str,
    config: dict,
    node_dir: Path,
    timeout_s: float = 3600.0,
) -> ExecutionResult:
    """Write model.py and config.json into ``node_dir`` and run the harness on ``data_dir``.

    ``node_dir`` is the only folder the code may write; ``data_dir`` is read-only input.
    """
    node_dir = Path(node_dir)
    if node_dir.exists():  # a re-run starts from a clean folder so stale outputs cannot be scored
        shutil.rmtree(node_dir)
    node_dir.mkdir(parents=True)
    (node_dir / "model.py").write_text(model_code)
    (node_dir / "config.json").write_text(json.dumps(config, indent=2))
    job = Job(
        command=[],
        workdir=node_dir,
        inputs={"data": Path(data_dir), "harness": HARNESS},
        timeout_s=timeout_s,
    )
    job.command = [
        backend.python(),
        backend.input_path(job, "harness"),
        "--data", backend.input_path(job, "data"),
        "--model", "model.py",
        "--config", "config.json",
        "--out", ".",
    ]
    return backend.run(job)
