"""Child-process backends: the code runs as a child of the host process, in its own process
group, with resource limits; ``unsafe-local`` runs it as is, ``bwrap`` (sandbox/bwrap.py) wraps
the same command in bubblewrap.

``unsafe-local`` does NOT isolate the network or the file system: the code runs as the host user
and can read and write whatever that user can. It runs only when asked for by name (or, for code
the builtin Coder wrote from the project's own templates, where no wall exists) and says so on
every result. Limits: address space (RLIMIT_AS, skipped when a GPU is used because CUDA reserves
huge virtual ranges), number of processes (RLIMIT_NPROC, counted per user and ignored for root),
CPU affinity for ``cpus``; a timeout or a cancellation kills the whole process group, and the
child gets a parent-death signal, so a killed host process leaves no training behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harmonycell.sandbox.outputs import collect_outputs, tail
from harmonycell.sandbox.result import ExecutionResult, Job
from harmonycell.tools.errors import SandboxError

NO_ISOLATION = ("UNSAFE-LOCAL backend: the code runs as a plain child process with NO network or "
                "file-system isolation (only memory/process/CPU limits and a timeout); "
                "use the docker or bwrap backend for untrusted code")
PR_SET_PDEATHSIG = 1  # prctl(2)
POLL_S = 0.2
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# Last lines of a traceback that mean "out of memory" rather than a bug in the code.
_OOM_MARKERS = ("MemoryError", "DefaultCPUAllocator: can't allocate memory",
                "DefaultCPUAllocator: not enough memory", "std::bad_alloc")


def parse_bytes(text: str) -> int:
    """'256m' -> 268435456 (docker's units: b, k, m, g, t, binary multiples; '1GiB' also reads)."""
    m = _SIZE.match(str(text).strip().lower())
    if not m or float(m[1]) <= 0:
        raise SandboxError(f"cannot read the memory size {text!r}", where="--memory",
                           fix="write a positive size like 512m or 8g")
    return int(float(m[1]) * _UNITS[m[2]])


def _user_process_count() -> int:
    uid, n = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - every Linux has a libc
        return None


class ChildProcessBackend:
    """Runs ``wrap(job)`` as a child process; subclasses say how the command is wrapped."""

    name = "child"
    isolated = False
    sample_tree_cpu = False  # True where os.wait4 cannot see the job's descendants (bwrap)

    def __init__(self) -> None:
        self.warning: str | None = None

    def wrap(self, job: Job, use_gpu: bool) -> list[str]:
        return list(job.command)

    def input_path(self, job: Job, name: str) -> str:
        return str(Path(job.inputs[name]).resolve())

    def python(self) -> str:
        return sys.executable

    def gpu_available(self) -> bool:
        try:
            import torch
        except ImportError:
            return False
        return bool(torch.cuda.is_available())

    def _limits(self, job: Job):
        mem = parse_bytes(job.memory)
        # RLIMIT_NPROC counts every process of the user, so leave room for those already running.
        nproc = _user_process_count() + job.pids
        # CUDA reserves far more address space than it uses, so RLIMIT_AS would break it: skip the
        # cap whenever the code may use a GPU (asked for, or auto on a machine with NVIDIA devices).
        use_gpu = job.gpu if job.gpu is not None else Path("/dev/nvidiactl").exists()
        cores = None
        libc, parent = _libc(), os.getpid()
        if job.cpuset:
            cores = set(job.cpuset)
        elif job.cpus:
            avail = sorted(os.sched_getaffinity(0))
            cores = set(avail[: max(1, min(len(avail), math.ceil(job.cpus)))])

        def apply() -> None:  # runs in the child between fork and exec
            # the child dies with the host process (SIGKILL of `harmonycell run` included): the
            # thread that forks waits for it, so the signal never fires while the run goes on
            if libc is not None:
                libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(137)
            if not use_gpu:
                resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            if cores:
                os.sched_setaffinity(0, cores)

        notes = [f"{self.name} backend: memory limit {job.memory} NOT enforced (the code may use a GPU)"] if use_gpu else []
        return apply, notes, use_gpu

    def run(self, job: Job, cancel: threading.Event | None = None) -> ExecutionResult:
        if job.gpu and not self.gpu_available():
            raise SandboxError("a GPU was requested but torch on this host sees no CUDA device",
                               where=f"{self.name} backend", fix="run without --gpu (or on a machine with a GPU)")
        job.workdir.mkdir(parents=True, exist_ok=True)
        out_path, err_path = job.workdir / "stdout.log", job.workdir / "stderr.log"
        env = {**os.environ, **job.env}
        if job.cpus and "HARMONYCELL_THREADS" not in job.env:
            env["HARMONYCELL_THREADS"] = str(max(1, math.ceil(job.cpus)))
        if job.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, job.gpu_ids))
        limits, notes, use_gpu = self._limits(job)
        command = self.wrap(job, use_gpu)
        t0 = time.monotonic()
        status, code, cpu = "ok", None, None
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    command, cwd=job.workdir, stdout=out, stderr=err, env=env,
                    start_new_session=True, preexec_fn=limits,
                )
            except FileNotFoundError:
                raise SandboxError(f"cannot start {command[0]!r}: no such program",
                                   where=f"{self.name} backend", fix="check the command") from None
            tree_cpu = TreeCPU(proc.pid) if self.sample_tree_cpu else None
            try:
                deadline = t0 + job.timeout_s
                while True:
                    try:
                        code, cpu = _wait_with_usage(proc, min(POLL_S, max(0.0, deadline - time.monotonic())))
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if tree_cpu is not None:
                        tree_cpu.sample()
                    if cancel is not None and cancel.is_set():
                        status = "killed"
                        _kill_group(proc)
                        break
                    if time.monotonic() >= deadline:
                        status = "timeout"
                        _kill_group(proc)
                        break
            except BaseException:  # KeyboardInterrupt, a crash in the caller: never leave a child
                _kill_group(proc)
                raise
            _kill_group(proc)  # the leader may be gone while its children still run
            if cpu is None:
                cpu = _reap_usage(proc)
            if tree_cpu is not None:
                cpu = max(cpu or 0.0, tree_cpu.total)
        if status == "ok":
            status = self._classify(code, err_path)
        return ExecutionResult(
            status=status, exit_code=code if status not in ("timeout", "killed") else proc.returncode,
            wall_s=round(time.monotonic() - t0, 3), backend=self.name, isolated=self.isolated,
            cpu_s=None if cpu is None else round(cpu, 3),
            stdout_tail=tail(out_path, own_files=job.trim_frames),
            stderr_tail=tail(err_path, own_files=job.trim_frames),
            outputs=collect_outputs(job.workdir),
            warnings=[w for w in (self.warning, *notes) if w],
        )

    @staticmethod
    def _classify(code: int | None, err_path: Path) -> str:
        if code == 0:
            return "ok"
        if code is not None and code < 0:
            return "oom" if code == -signal.SIGKILL and _tail_says_oom(err_path) else "killed"
        return "oom" if _tail_says_oom(err_path) else "error"


class LocalBackend(ChildProcessBackend):
    """``unsafe-local``: the command as it is, with no wall; said on every result."""

    name = "unsafe-local"
    isolated = False

    def __init__(self) -> None:
        super().__init__()
        self.warning = NO_ISOLATION


class TreeCPU:
    """CPU seconds of a process tree sampled from /proc while it runs: for a child whose own
    descendants' usage never reaches ``os.wait4`` (bubblewrap's namespaced init reaps them).
    Each process counts its own user + system time at its last sample (children's are not added
    twice); what a process spends after the last sample, at most one poll, is missed."""

    def __init__(self, root: int):
        self.root, self.seen = root, {}
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        parent, own = {}, {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # after "(comm)", which may hold spaces
            parent[int(entry.name)] = int(fields[1])
            own[int(entry.name)] = (int(fields[11]) + int(fields[12])) / self.tick
        for pid, cpu in own.items():
            cur = pid
            while cur in parent and cur != self.root and cur > 1:
                cur = parent[cur]
            if cur == self.root:
                self.seen[pid] = max(cpu, self.seen.get(pid, 0.0))

    @property
    def total(self) -> float:
        return sum(self.seen.values())


def _tail_says_oom(err_path: Path) -> bool:
    lines = [ln for ln in tail(err_path, 2000).splitlines() if ln.strip()]
    return bool(lines) and any(m in lines[-1] for m in _OOM_MARKERS)


def _wait_with_usage(proc: subprocess.Popen, timeout: float) -> tuple[int, float]:
    """``proc.wait(timeout)`` that also returns the CPU seconds (user + system) of the child and
    of every descendant it waited for, from ``os.wait4``: the cost of the job's process tree."""
    end = time.monotonic() + timeout
    while True:
        cpu = _reap_usage(proc, block=False)
        if cpu is not None:
            return proc.returncode, cpu
        if time.monotonic() >= end:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.02)


def _reap_usage(proc: subprocess.Popen, block: bool = True) -> float | None:
    if proc.returncode is not None:
        return None  # already reaped by Popen itself: its usage is no longer available
    try:
        pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return None
    if pid != proc.pid:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
