"""Where a node's training runs: on this machine (``LocalExecutor``, one slot per worker) or on a
Ray cluster (``sandbox.ray_executor.RayExecutor``). Both take the same ``NodeJob`` and give back the
sandbox's ``ExecutionResult`` plus a ``Placement`` saying where it ran; the node folder on the
host holds the outputs either way, and the host scores them as always.
"""

from __future__ import annotations

import threading
from typing import Callable

from harmonycell.sandbox.backends import Backend
from harmonycell.sandbox.jobs import Executor, NodeJob, Placement
from harmonycell.sandbox.ray_executor import RayExecutor
from harmonycell.sandbox.result import ExecutionResult
from harmonycell.sandbox.slots import Slot, host_cores, host_gpu_count, plan_slots
from harmonycell.sandbox.training import run_training

EXECUTORS = ("local", "ray")


class LocalExecutor:
    """Nodes on this machine: with one worker the backend's defaults (every core); with N, each
    worker's node is pinned to its own cores (and GPU, where there are GPUs)."""

    name = "local"

    def __init__(self, backend: Backend, workers: int = 1, slots: list[Slot] | None = None):
        self.backend = backend
        self.workers = workers
        gpus = host_gpu_count() if backend.gpu_available() else 0
        self.slots = slots or plan_slots(workers, host_cores(), gpus)
        self.parallel = workers > 1

    def run(self, job: NodeJob, worker: int, cancel: threading.Event | None = None,
            on_retry: Callable[[str], None] | None = None) -> tuple[ExecutionResult, Placement]:
        slot = self.slots[worker]
        share = dict(cpus=job.cpus) if self.workers == 1 else dict(
            cpus=float(slot.threads), cpuset=list(slot.cores),
            gpu_ids=list(slot.gpu_ids) if slot.gpu_ids is not None else None,
            gpu=False if slot.gpu_ids == () else None)
        res = run_training(self.backend, job.data_dir, job.code, job.config, job.node_dir,
                           timeout_s=job.timeout_s, cancel=cancel, run_id=job.run_id, env=job.env or None,
                           **share)
        return res, Placement(worker=slot.label, executor=self.name, where="this machine")

    def close(self) -> None:
        return None


def make_executor(name: str, backend: Backend, backend_name: str, workers: int | None,
                  ray_address: str | None = None, allow_unwalled: bool = False) -> Executor:
    """The run's executor; ``workers`` None: 1 locally, the cluster's CPUs on Ray."""
    if name == "ray":
        return RayExecutor(address=ray_address, backend_name=backend_name, workers=workers,
                           allow_unwalled=allow_unwalled)
    return LocalExecutor(backend, workers or 1)
