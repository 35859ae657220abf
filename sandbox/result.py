"""What every sandbox backend returns."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["ok", "error", "timeout", "oom", "killed"]


class OutputFile(BaseModel):
    path: str  # relative to the node folder
    sha256: str
    bytes: int


class Job(BaseModel):
    """One execution: a command run in a fresh writable folder with read-only inputs."""

    command: list[str]
    workdir: Path  # the one writable folder (the node folder)
    inputs: dict[str, Path] = Field(default_factory=dict)  # name -> host path, mounted read-only
    timeout_s: float = 3600.0
    memory: str = "8g"
    cpus: float | None = None
    pids: int = 512
    env: dict[str, str] = Field(default_factory=dict)
    run_id: str | None = None  # labels the container / names the run, so `resume` can reap it
    gpu: bool | None = None  # None: use a GPU when the backend has one; True: require one
    # a worker's share of the machine (parallel nodes): these host cores and these GPU indices only
    cpuset: list[int] | None = None
    gpu_ids: list[int] | None = None
    tmp_size: str = "1g"  # the tmpfs /tmp (docker); counts against ``memory``
    # files whose traceback frames are hidden from the tails (the harness's own frames)
    trim_frames: list[str] = Field(default_factory=list)


class ExecutionResult(BaseModel):
    status: Status
    exit_code: int | None
    wall_s: float
    backend: str
    # CPU seconds (user + system) of the job's process tree: unlike wall time it does not grow
    # when other work shares the machine. None when the backend could not measure it.
    cpu_s: float | None = None
    isolated: bool = False  # True only behind a wall (docker, bwrap); unsafe-local says False
    stdout_tail: str = ""
    stderr_tail: str = ""
    outputs: list[OutputFile] = Field(default_factory=list)
    sandbox_id: str | None = None  # docker: the container name (gone once the run returns)
    warnings: list[str] = Field(default_factory=list)  # e.g. the local backend isolates nothing

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def output(self, name: str) -> OutputFile | None:
        return next((o for o in self.outputs if o.path == name), None)
