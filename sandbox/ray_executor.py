"""Nodes on a Ray cluster: each node's training is one Ray task with its CPU (and, where the
cluster has them, GPU) request. The task runs the sandbox on the machine that takes it (Docker
there, else bubblewrap: the run's ``--backend``), on the task data shipped once through Ray's
object store, and sends back every file of the node folder with the sandbox's sha256 of each; the
host writes them into its node folder, checks the hashes and scores the predictions as always.

A task lost with its worker (the machine died, the raylet was killed) is submitted once more, to
whichever node Ray has left, and the caller is told so it goes on the record. With no address a
local Ray instance is started for the run and stopped after it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from harmonycell.sandbox.backends import get_backend
from harmonycell.sandbox.jobs import NodeJob, Placement
from harmonycell.sandbox.training import run_training
from harmonycell.sandbox.result import ExecutionResult
from harmonycell.tools.errors import InputError, SandboxError
from harmonycell.tools.record import atomic

POLL_S = 0.5
WORKER_ROOT = "harmonycell-ray"  # under the worker's temp folder: task data cache and node folders


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray, which is not installed", where="--executor",
                         fix="pip install 'harmonycell[ray]', or use --executor local") from None
    return ray


def pack_folder(folder: Path) -> tuple[str, dict[str, bytes]]:
    """(sha256 of the folder's files, {relative path: bytes}): what a worker needs of the data."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes()
             for p in sorted(Path(folder).rglob("*")) if p.is_file()}
    h = hashlib.sha256()
    for rel, data in files.items():
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest(), files


def _materialise(digest: str, files: dict[str, bytes]) -> Path:
    """The task data on this worker, written once per digest (safe for tasks racing to write it)."""
    root = Path(tempfile.gettempdir()) / WORKER_ROOT / "data"
    target = root / digest
    if target.exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".incoming-"))
    for rel, data in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    try:
        os.rename(tmp, target)
    except OSError:  # another task got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def train_on_worker(digest: str, files: dict[str, bytes], job: dict, backend_name: str,
                    allow_unwalled: bool, cpus: float) -> dict:
    """The Ray task body (runs on the worker): the sandbox on local copies, the node folder back."""
    import ray

    data = _materialise(digest, files)
    scratch = Path(tempfile.mkdtemp(dir=data.parent.parent, prefix="node-"))
    try:
        node_dir = scratch / "node"
        res = run_training(get_backend(backend_name, allow_unwalled=allow_unwalled), data, job["code"],
                           job["config"], node_dir, timeout_s=job["timeout_s"], run_id=job["run_id"],
                           cpus=cpus, env=job.get("env") or None)
        out = {p.relative_to(node_dir).as_posix(): p.read_bytes()
               for p in sorted(node_dir.rglob("*")) if p.is_file()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"result": res.model_dump(mode="json"), "files": out,
            "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def write_back(node_dir: Path, files: dict[str, bytes], res: ExecutionResult) -> None:
    """The worker's node folder on the host; every output must hash as the sandbox said."""
    if node_dir.exists():
        shutil.rmtree(node_dir)
    node_dir.mkdir(parents=True)
    for rel, data in files.items():
        atomic.write_bytes(node_dir / rel, data)
    for o in res.outputs:
        if atomic.sha256_file(node_dir / o.path) != o.sha256:
            raise SandboxError(f"output {o.path} changed on its way back from the Ray worker",
                               where=str(node_dir), fix="re-run the node")


class RayExecutor:
    name = "ray"
    parallel = True  # even one worker: nodes go through the cluster, not the one-at-a-time path

    def __init__(self, address: str | None = None, backend_name: str = "auto", workers: int | None = None,
                 cpus_per_node: float = 1.0, allow_unwalled: bool = False):
        ray = _ray()
        self.started_local = address is None
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False, **({} if address else {"num_cpus": os.cpu_count()}))
        except (ConnectionError, RuntimeError) as exc:
            raise InputError(f"cannot reach the Ray cluster ({exc})", where=f"--ray-address {address}",
                             fix="start it with `ray start --head` and pass the address it prints; a cluster "
                                 "with token authentication (Ray turns it on when ~/.ray/auth_token exists) "
                                 "also needs RAY_AUTH_MODE=token here") from None
        resources = ray.cluster_resources()
        self.backend_name, self.allow_unwalled = backend_name, allow_unwalled
        self.cpus = cpus_per_node
        self.gpus = 1 if resources.get("GPU", 0) >= 1 else 0  # only where the cluster has them
        self.workers = workers or max(1, int(resources.get("CPU", 1) // cpus_per_node))
        self._packs: dict[Path, tuple[str, object]] = {}
        self._lock = threading.Lock()
        self._task = ray.remote(train_on_worker)

    def _data(self, data_dir: Path):
        with self._lock:
            if data_dir not in self._packs:
                digest, files = pack_folder(data_dir)
                self._packs[data_dir] = (digest, _ray().put(files))
            return self._packs[data_dir]

    def _submit(self, job: NodeJob):
        digest, ref = self._data(Path(job.data_dir))
        body = {"code": job.code, "config": job.config, "timeout_s": job.timeout_s, "run_id": job.run_id,
                "env": job.env}
        return self._task.options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0).remote(
            digest, ref, body, self.backend_name, self.allow_unwalled, self.cpus)

    def _wait(self, ref, cancel: threading.Event | None) -> dict:
        ray = _ray()
        while True:
            ready, _ = ray.wait([ref], timeout=POLL_S)
            if ready:
                return ray.get(ref)
            if cancel is not None and cancel.is_set():
                ray.cancel(ref, force=True)
                raise KeyboardInterrupt

    def run(self, job: NodeJob, worker: int, cancel: threading.Event | None = None,
            on_retry: Callable[[str], None] | None = None) -> tuple[ExecutionResult, Placement]:
        ray = _ray()
        retried = None
        for attempt in (1, 2):
            t0 = time.monotonic()
            try:
                out = self._wait(self._submit(job), cancel)
                break
            except ray.exceptions.RayTaskError as exc:  # our task body raised: not a lost worker
                raise SandboxError(f"the Ray task for {job.node_id} failed: {exc.cause!r}",
                                   where="ray executor", fix="see the worker's log") from None
            except ray.exceptions.RayError as exc:  # the worker or its machine died under the task
                why = (f"{type(exc).__name__} after {time.monotonic() - t0:.0f}s on attempt {attempt}: "
                       f"{str(exc).splitlines()[0][:200]}")
                if attempt == 2:
                    raise SandboxError(f"node {job.node_id} lost its Ray worker twice ({why})",
                                       where="ray executor", fix="check the cluster (`ray status`)") from None
                retried = why
                if on_retry is not None:
                    on_retry(why)
        res = ExecutionResult.model_validate(out["result"])
        write_back(Path(job.node_dir), out["files"], res)
        return res, Placement(worker=f"w{worker}", executor=self.name, where=out["node"], host=out["host"],
                              retried=retried)

    def close(self) -> None:
        ray = _ray()
        if ray.is_initialized():
            ray.shutdown()  # stops the instance this run started; only disconnects from a cluster
