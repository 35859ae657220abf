"""The Docker engine as the sandbox sees it: connection, capabilities, and reaping of
containers left behind by a host process that died.

Every sandbox container carries labels naming its owner (host, pid, process start time), so a
later HarmonyCell process can tell a live run from an orphan and remove the orphan.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from harmonycell.tools.errors import SandboxError

LABEL = "org.harmonycell.sandbox"
LABEL_OWNER = "org.harmonycell.owner"
LABEL_RUN = "org.harmonycell.run"  # the run id, so `resume` can remove what the killed run left
LABEL_INPUTS = "org.harmonycell.inputs"  # on the image: hash of what it was built from

DEFAULT_IMAGE = "harmonycell-sandbox:latest"
DEFAULT_BASE = "harmonycell-base:bookworm"


def image_name() -> str:
    return os.environ.get("HARMONYCELL_SANDBOX_IMAGE", DEFAULT_IMAGE)


def _where() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect(timeout: int = 30):
    """A docker SDK client for a responding engine, or a SandboxError saying what to do."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a declared dependency
        raise SandboxError("the docker Python SDK is not installed", fix="pip install docker") from exc
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "nobody home"
        raise SandboxError(
            f"no Docker engine answers ({type(exc).__name__})",
            where=_where(),
            fix="start one (`sudo dockerd &`, or run under `.ci/with-docker.sh`), or use --backend bwrap",
        ) from None
    return client


@dataclass(frozen=True)
class EngineInfo:
    version: str
    runtimes: tuple[str, ...]
    cgroup_version: str
    nvidia: bool  # the engine can hand GPUs to containers


def engine_info(client) -> EngineInfo:
    info = client.info()
    runtimes = tuple(sorted((info.get("Runtimes") or {}).keys()))
    return EngineInfo(
        version=str(info.get("ServerVersion", "?")),
        runtimes=runtimes,
        cgroup_version=str(info.get("CgroupVersion", "?")),
        nvidia="nvidia" in runtimes,
    )


def find_image(client, name: str | None = None):
    """The sandbox image object, or None when it has not been built."""
    import docker

    try:
        return client.images.get(name or image_name())
    except docker.errors.ImageNotFound:
        return None


def require_image(client, name: str | None = None):
    img = find_image(client, name)
    if img is None:
        raise SandboxError(
            f"the sandbox image {name or image_name()} does not exist",
            fix="run `harmonycell sandbox build`",
        )
    return img


# ---- ownership and reaping -------------------------------------------------------------------

def _start_time(pid: int) -> str | None:
    """Kernel start time of a process (guards against a recycled pid), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    # field 22, counted after the parenthesised command name (which may contain spaces)
    return stat.rsplit(")", 1)[1].split()[19]


def owner_label() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def owner_alive(label: str) -> bool:
    try:
        host, pid, start = label.rsplit(":", 2)
        pid_i = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another machine's run on a shared engine: not ours to judge
    now = _start_time(pid_i)
    return now is not None and (start == "?" or now == start)


def _remove(containers) -> list[str]:
    """Remove each container (gone already is fine); return the names removed."""
    import docker

    removed = []
    for c in containers:
        try:
            c.remove(force=True)
            removed.append(c.name)
        except docker.errors.NotFound:
            pass
    return removed


def reap_orphans(client) -> list[str]:
    """Remove sandbox containers whose owning process is gone; return their names."""
    return _remove(c for c in client.containers.list(all=True, filters={"label": LABEL})
                   if not owner_alive(c.labels.get(LABEL_OWNER, "")))


def reap_run(client, run_id: str) -> list[str]:
    """Remove every sandbox container labelled with ``run_id`` (called by `resume`, whose run
    was stopped: anything still there belongs to the dead process)."""
    return _remove(client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}))


def reap_run_sandboxes(run_id: str) -> list[str]:
    """What `resume` calls: remove the containers a stopped run left, so a resumed run never has
    a node trained twice at once. Without an engine there is nothing to do (bwrap and
    unsafe-local children die with the process that started them)."""
    try:
        client = connect(timeout=10)
    except SandboxError:
        return []
    return reap_run(client, run_id)
