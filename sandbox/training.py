"""Run one training node: the harness, a model module and its config, inside a backend.

Docker and bwrap: the task data and the harness are mounted read-only (under /inputs), the node
folder is the only writable mount. unsafe-local: the same command on host paths (no isolation).
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from harmonycell.sandbox.backends import Backend
from harmonycell.sandbox.result import ExecutionResult, Job

HARNESS = Path(__file__).with_name("harness.py")
# OpenMP threads that spin while they wait make a node on a shared machine many times slower:
# on 2 cores beside other CPU-bound jobs, 8 epochs of one node took 16 s with one thread, 239 s
# with two threads at OpenMP's default wait policy and 21 s with two passive ones
# (bench/omp_wait.py -> bench/results/omp_wait.json). It must be set before torch loads.
NODE_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def run_training(
    backend: Backend,
    data_dir: Path,
    model_code: str,
    config: dict,
    node_dir: Path,
    timeout_s: float = 3600.0,
    *,
    memory: str = "8g",
    cpus: float | None = None,
    gpu: bool | None = None,
    cpuset: list[int] | None = None,
    gpu_ids: list[int] | None = None,
    env: dict[str, str] | None = None,
    cancel: threading.Event | None = None,
    run_id: str | None = None,
) -> ExecutionResult:
    """Write model.py and config.json into ``node_dir`` and run the harness on ``data_dir``.

    ``node_dir`` is the only folder the code may write; ``data_dir`` is read-only input.
    ``gpu``: None uses a GPU when the backend has one, True requires one, False forbids it.
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
        memory=memory,
        cpus=cpus,
        env={**NODE_ENV, **(env or {})},
        gpu=gpu,
        cpuset=cpuset,
        gpu_ids=gpu_ids,
        run_id=run_id,
    )
    harness = backend.input_path(job, "harness")
    job.trim_frames = [harness]
    job.command = [
        backend.python(),
        harness,
        "--data", backend.input_path(job, "data"),
        "--model", "model.py",
        "--config", "config.json",
        "--out", ".",
    ]
    return backend.run(job, cancel=cancel)
