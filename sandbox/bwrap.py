"""bubblewrap backend: the wall where no Docker engine runs.

The code runs in fresh namespaces (``--unshare-all``: no network, its own PIDs, IPC, UTS) with
every capability dropped. It sees read-only binds of the system (``/usr`` and the interpreter's
own folders), the job's inputs read-only under ``/inputs``, a private ``/tmp``, and one writable
folder, the node folder, at ``/work``. Nothing else of the run folder exists inside. bwrap dies
with the host process (``--die-with-parent``), taking every process of the sandbox with it.
Memory/CPU limits and timeouts are the child-process ones (see sandbox/local.py).
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

from harmonycell.sandbox.local import ChildProcessBackend
from harmonycell.sandbox.result import Job
from harmonycell.tools.errors import SandboxError

WORKDIR = "/node"  # not /work: host folders (a venv under /work) would be hidden under it
INPUTS = "/inputs"
# Top-level system folders; with a merged /usr most of these are symlinks into it.
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The few files of /etc an interpreter and its libraries read; never the whole of /etc.
ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
       "/etc/localtime", "/etc/ssl/certs")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def bwrap_path() -> str | None:
    return shutil.which(os.environ.get("HARMONYCELL_BWRAP", "bwrap"))


def interpreter_dirs() -> list[Path]:
    """Folders the interpreter and its packages live in, outside the system folders."""
    dirs = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
    for p in [*site.getsitepackages(), site.getusersitepackages()]:
        dirs.add(Path(p))
    out = []
    for d in sorted(dirs):
        d = d.resolve() if d.exists() else d
        if d.exists() and not any(_inside(d, Path(s)) for s in SYSTEM if Path(s).exists()):
            out.append(d)
    # the outermost folders only: a bind of a parent already holds its children
    return [d for d in out if not any(o != d and _inside(d, o) for o in out)]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


@functools.lru_cache(maxsize=4)
def probe(bwrap: str) -> str | None:
    """None when bwrap can build a sandbox here, else why not (e.g. user namespaces are off)."""
    try:
        proc = subprocess.run([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/",
                               "--proc", "/proc", "--dev", "/dev", "true"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")


class BwrapBackend(ChildProcessBackend):
    name = "bwrap"
    isolated = True
    # bwrap's init inside the pid namespace reaps the job, so os.wait4 on bwrap sees ~nothing
    sample_tree_cpu = True

    def __init__(self) -> None:
        super().__init__()
        self.bwrap = bwrap_path()
        if self.bwrap is None:
            raise SandboxError("bubblewrap (bwrap) is not installed", where="bwrap backend",
                               fix="`sudo apt-get install bubblewrap` (or run `make setup`)")
        why = probe(self.bwrap)
        if why is not None:
            raise SandboxError(f"bubblewrap cannot create a sandbox here ({why.splitlines()[-1]})",
                               where=self.bwrap,
                               fix="enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) "
                                   "or use the docker backend")

    def input_path(self, job: Job, name: str) -> str:
        src = Path(job.inputs[name])
        return f"{INPUTS}/{name}/{src.name}" if src.is_file() else f"{INPUTS}/{name}"

    def python(self) -> str:
        return sys.executable

    def wrap(self, job: Job, use_gpu: bool) -> list[str]:
        workdir = Path(job.workdir).resolve()
        args = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session",
                "--cap-drop", "ALL", "--clearenv"]
        for s in SYSTEM:
            p = Path(s)
            if p.is_symlink():
                args += ["--symlink", os.readlink(p), s]
            elif p.is_dir():
                args += ["--ro-bind", s, s]
        for f in ETC:
            if Path(f).exists():
                args += ["--ro-bind", f, f]
        # the private /tmp first: binds are applied in order, so an interpreter that lives under
        # /tmp (a venv there) is bound on top of it, read-only, instead of being hidden by it
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        for d in interpreter_dirs():
            if _inside(workdir, d):
                raise SandboxError(f"the node folder {workdir} lies inside the interpreter's folder {d}",
                                   where="bwrap backend",
                                   fix="put the run folder (--out) outside the Python installation")
            args += ["--ro-bind", str(d), str(d)]
        if use_gpu:
            for dev in sorted(Path("/dev").glob("nvidia*")):
                args += ["--dev-bind", str(dev), str(dev)]
        for name, src in job.inputs.items():
            src = Path(src).resolve()
            if not src.exists():
                raise SandboxError(f"input {name!r} does not exist", where=str(src),
                                   fix="check the path given to the sandbox job")
            args += ["--ro-bind", str(src), self.input_path(job, name)]
        # the sandbox's own root (a tmpfs holding the mount points) read-only too: /node and /tmp
        # are the only places the code can write
        args += ["--bind", str(workdir), WORKDIR, "--remount-ro", "/", "--chdir", WORKDIR]
        env = {"PATH": PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
               "PYTHONDONTWRITEBYTECODE": "1", **_passthrough(), **job.env}
        if job.cpus and "HARMONYCELL_THREADS" not in job.env:
            import math

            env["HARMONYCELL_THREADS"] = str(max(1, math.ceil(job.cpus)))
        if job.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, job.gpu_ids))
        for k, v in env.items():
            args += ["--setenv", k, v]
        return [*args, "--", *job.command]


def _passthrough() -> dict[str, str]:
    """Thread settings of the host (they change numbers, not what the code can reach)."""
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "HARMONYCELL_THREADS", "CUDA_VISIBLE_DEVICES")
    return {k: os.environ[k] for k in keys if k in os.environ}
