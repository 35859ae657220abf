"""Docker backend: one throw-away container per job, isolated and limited.

No network (only loopback), memory/CPU/pids limits with no swap, a read-only root with a tmpfs
/tmp, a non-root user, every capability dropped, no-new-privileges; inputs mounted read-only
under /inputs, the node folder mounted at /work as the only writable place. GPUs are requested
only when the engine has the NVIDIA runtime. The container is removed whatever happens (timeout,
cancellation, KeyboardInterrupt); one orphaned by a host crash is removed by the next backend
that starts (see ``engine.reap_orphans``).
"""

from __future__ import annotations

import math
import os
import stat
import threading
import time
import uuid
from pathlib import Path

from harmonycell.sandbox import engine
from harmonycell.sandbox.local import parse_bytes
from harmonycell.sandbox.outputs import collect_outputs, tail
from harmonycell.sandbox.result import ExecutionResult, Job
from harmonycell.tools.record.atomic import write_bytes
from harmonycell.tools.errors import SandboxError

WORKDIR = "/work"
INPUTS = "/inputs"
SANDBOX_UID = 10001  # used when the host runs as root; otherwise the host user's own uid
POLL_S = 0.25
LOG_MAX = "20m"
HARD_DEADLINE_GRACE_S = 30  # per stream kept by the engine; the tails only need the end


class DockerBackend:
    name = "docker"
    isolated = True

    def __init__(self, client=None, image: str | None = None) -> None:
        self.client = client or engine.connect()
        self.image = image or engine.image_name()
        self.image_obj = engine.require_image(self.client, self.image)
        self.info = engine.engine_info(self.client)
        self.reaped = engine.reap_orphans(self.client)

    # -- paths as the code inside sees them ---------------------------------------------------
    def input_path(self, job: Job, name: str) -> str:
        src = Path(job.inputs[name])
        return f"{INPUTS}/{name}/{src.name}" if src.is_file() else f"{INPUTS}/{name}"

    def python(self) -> str:
        return "python3"

    def gpu_available(self) -> bool:
        return self.info.nvidia

    # -- running ------------------------------------------------------------------------------
    def _user(self) -> tuple[int, int]:
        if os.geteuid() == 0:
            return SANDBOX_UID, SANDBOX_UID
        return os.getuid(), os.getgid()

    def _mounts(self, job: Job) -> dict:
        vols = {str(Path(job.workdir).resolve()): {"bind": WORKDIR, "mode": "rw"}}
        for name in job.inputs:
            src = Path(job.inputs[name]).resolve()
            if not src.exists():
                raise SandboxError(f"input {name!r} does not exist", where=str(src),
                                   fix="check the path given to the sandbox job")
            vols[str(src)] = {"bind": self.input_path(job, name), "mode": "ro"}
        return vols

    def _device_requests(self, job: Job):
        import docker

        if job.gpu and not self.info.nvidia:
            raise SandboxError(
                "a GPU was requested but the Docker engine has no NVIDIA runtime",
                where=f"docker {self.info.version} (runtimes: {', '.join(self.info.runtimes)})",
                fix="install nvidia-container-toolkit and restart dockerd, or run without --gpu")
        if job.gpu is False or not self.info.nvidia:
            return None
        if job.gpu_ids is not None:  # this worker's GPUs only (one node per GPU)
            return [docker.types.DeviceRequest(device_ids=[str(i) for i in job.gpu_ids], capabilities=[["gpu"]])]
        return [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]

    def run(self, job: Job, cancel: threading.Event | None = None) -> ExecutionResult:
        import docker

        workdir = Path(job.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        uid, gid = self._user()
        mem = parse_bytes(job.memory)
        env = {"HOME": "/tmp", "PYTHONUNBUFFERED": "1", **job.env}
        if job.cpus and "HARMONYCELL_THREADS" not in job.env:
            env["HARMONYCELL_THREADS"] = str(max(1, math.ceil(job.cpus)))
        name = f"harmonycell-sbx-{uuid.uuid4().hex[:12]}"
        volumes = self._mounts(job)
        device_requests = self._device_requests(job)
        host_owner = _grant(workdir, job.inputs.values(), uid, gid)
        t0 = time.monotonic()
        container = None
        status, code = "ok", None
        try:
            container = self.client.containers.create(
                self.image, command=_with_hard_deadline(job), name=name, working_dir=WORKDIR,
                user=f"{uid}:{gid}", environment=env, volumes=volumes,
                network_mode="none", read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={parse_bytes(job.tmp_size)},mode=1777"},
                mem_limit=mem, memswap_limit=mem, pids_limit=job.pids,
                nano_cpus=int(job.cpus * 1e9) if job.cpus else None,
                cpuset_cpus=",".join(map(str, job.cpuset)) if job.cpuset else None,
                cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
                device_requests=device_requests, shm_size="256m",
                labels={engine.LABEL: "1", engine.LABEL_OWNER: engine.owner_label(),
                        **({engine.LABEL_RUN: job.run_id} if job.run_id else {})},
                log_config=docker.types.LogConfig(type="json-file", config={"max-size": LOG_MAX, "max-file": "1"}),
            )
            container.start()
            deadline = t0 + job.timeout_s
            cpu = None
            while True:
                # the cgroup vanishes with the container, so keep the last reading before the exit
                cpu = _cgroup_cpu_s(container.id) or cpu
                try:
                    code = container.wait(timeout=POLL_S)["StatusCode"]
                    break
                except Exception:  # requests' ReadTimeout / ConnectionError: still running
                    pass
                if cancel is not None and cancel.is_set():
                    status = "killed"
                    break
                if time.monotonic() >= deadline:
                    status = "timeout"
                    break
            if status != "ok":
                _kill(container)
                try:  # let the engine record the exit before reading the state and logs
                    container.wait(timeout=10)
                except Exception:
                    pass
            container.reload()
            state = container.attrs.get("State", {})
            wall = round(time.monotonic() - t0, 3)
            code = state.get("ExitCode", code)
            if status == "ok":
                status = ("oom" if state.get("OOMKilled") else
                          "ok" if code == 0 else "killed" if code in (137, 143) else "error")
            for stream, fname in (("stdout", "stdout.log"), ("stderr", "stderr.log")):
                data = container.logs(stdout=stream == "stdout", stderr=stream == "stderr")
                write_bytes(workdir / fname, data)
        finally:
            if container is not None:
                _remove(container)
            _restore(workdir, host_owner)
        return ExecutionResult(
            status=status, exit_code=code, wall_s=wall, backend=self.name, isolated=True,
            cpu_s=None if cpu is None else round(cpu, 3),
            stdout_tail=tail(workdir / "stdout.log", own_files=job.trim_frames),
            stderr_tail=tail(workdir / "stderr.log", own_files=job.trim_frames),
            outputs=collect_outputs(workdir), sandbox_id=name,
        )


def _with_hard_deadline(job: Job) -> list[str]:
    """The command under coreutils ``timeout``: if the host process dies (so nobody enforces
    the timeout from outside), the code inside still stops, shortly after its own deadline."""
    grace = int(os.environ.get("HARMONYCELL_SANDBOX_GRACE_S", HARD_DEADLINE_GRACE_S))
    return ["timeout", "-s", "KILL", str(int(math.ceil(job.timeout_s)) + grace),
            *job.command]


_CGROUP_CPU = (  # (file, scale to seconds): cgroup v1 (cgroupfs, systemd) then v2
    ("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage", 1e-9),
    ("/sys/fs/cgroup/cpuacct/system.slice/docker-{id}.scope/cpuacct.usage", 1e-9),
    ("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat", 1e-6),
    ("/sys/fs/cgroup/docker/{id}/cpu.stat", 1e-6),
)


def _cgroup_cpu_s(container_id: str) -> float | None:
    """CPU seconds used so far by every process of the container (its cgroup's accounting), or
    None where the engine's cgroups are not visible from here."""
    for pattern, scale in _CGROUP_CPU:
        try:
            text = Path(pattern.format(id=container_id)).read_text()
        except OSError:
            continue
        if text.startswith("usage_usec"):
            return int(text.split()[1]) * scale
        try:
            return int(text.split()[0]) * scale
        except (ValueError, IndexError):
            continue
    return None


def _kill(container) -> None:
    import docker

    try:
        container.kill()
    except docker.errors.APIError:  # already exited
        pass


def _remove(container) -> None:
    import docker

    for _ in range(3):
        try:
            container.remove(force=True)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:  # "removal already in progress" and friends
            time.sleep(0.2)


def _grant(workdir: Path, inputs, uid: int, gid: int) -> tuple[int, int] | None:
    """Let the container user write the node folder and read the inputs.

    Only needed when the host runs as root (the container then runs as SANDBOX_UID): the node
    folder is handed to that uid for the run and back afterwards; inputs that others cannot read
    (files written with mode 0600) get read permission for others.
    """
    if os.geteuid() != 0:
        return None
    st = workdir.stat()
    _chown_tree(workdir, uid, gid)
    for src in inputs:
        for p in [Path(src), *(Path(src).rglob("*") if Path(src).is_dir() else [])]:
            mode = p.stat().st_mode
            need = stat.S_IROTH | (stat.S_IXOTH if p.is_dir() else 0)
            if mode & need != need:
                os.chmod(p, mode | need)
    return st.st_uid, st.st_gid


def _restore(workdir: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None and workdir.exists():
        _chown_tree(workdir, *owner)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for p in root.rglob("*"):
        os.chown(p, uid, gid, follow_symlinks=False)
