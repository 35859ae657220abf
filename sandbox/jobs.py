"""What an executor is given (a ``NodeJob``) and says back besides the result (a ``Placement``):
the contract between the search and every executor (``sandbox.executors``, ``sandbox.ray_executor``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Protocol

from pydantic import BaseModel

from harmonycell.sandbox.result import ExecutionResult


class NodeJob(BaseModel):
    """One node's training: code and config, the task's sandbox data, the host's node folder."""

    node_id: str
    code: str
    config: dict
    data_dir: Path
    node_dir: Path
    timeout_s: float = 900.0
    run_id: str | None = None
    # the node's share of the machine when one worker runs alone (None: the backend's default);
    # a parallel executor's slot sets it instead
    cpus: float | None = None
    env: dict[str, str] = {}  # extra environment inside the sandbox (e.g. OMP_WAIT_POLICY)


class Placement(BaseModel):
    worker: str  # w0, w1, ...: the slot of this run
    executor: str  # local | ray
    where: str  # "this machine", or the Ray node id that ran it
    host: str = ""
    retried: str | None = None  # why the first attempt was lost (a Ray worker died), if it was


class Executor(Protocol):
    name: str
    workers: int
    parallel: bool  # several nodes may be in flight (the search runs through agents.search)

    def run(self, job: NodeJob, worker: int, cancel: threading.Event | None = None,
            on_retry: Callable[[str], None] | None = None) -> tuple[ExecutionResult, Placement]: ...

    def close(self) -> None: ...
