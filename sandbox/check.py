"""What the sandbox can do on this machine: engine, image, GPU, and the backend ``auto`` picks."""

from __future__ import annotations

from pydantic import BaseModel

from harmonycell.sandbox import engine
from harmonycell.tools.errors import SandboxError


class CheckReport(BaseModel):
    backend: str  # what ``auto`` would use: docker, bwrap, or none (a run would stop)
    engine_ok: bool
    engine_version: str | None = None
    engine_problem: str | None = None
    runtimes: list[str] = []
    image: str
    image_id: str | None = None
    image_inputs: str | None = None  # the inputs hash the image was built from
    image_problem: str | None = None
    docker_gpu: bool = False  # the engine has the NVIDIA runtime
    host_gpu: bool = False  # torch on the host sees a CUDA device (bwrap / unsafe-local)
    bwrap_ok: bool = False
    bwrap_problem: str | None = None
    fix: str | None = None

    @property
    def docker_ready(self) -> bool:
        return self.engine_ok and self.image_id is not None


def check(image: str | None = None) -> CheckReport:
    name = image or engine.image_name()
    rep = CheckReport(backend="none", engine_ok=False, image=name, host_gpu=_host_gpu())
    _check_bwrap(rep)
    _check_docker(rep, name)
    if rep.backend != "docker" and rep.bwrap_ok:
        rep.backend = "bwrap"
    return rep


def _check_bwrap(rep: CheckReport) -> None:
    from harmonycell.sandbox.bwrap import BwrapBackend

    try:
        BwrapBackend()
        rep.bwrap_ok = True
    except SandboxError as why:
        rep.bwrap_problem = why.one_line()


def _check_docker(rep: CheckReport, name: str) -> CheckReport:
    try:
        client = engine.connect(timeout=10)
    except SandboxError as why:
        rep.engine_problem, rep.fix = why.what, why.fix
        return rep
    info = engine.engine_info(client)
    rep.engine_ok, rep.engine_version = True, info.version
    rep.runtimes, rep.docker_gpu = list(info.runtimes), info.nvidia
    img = engine.find_image(client, name)
    if img is None:
        rep.image_problem, rep.fix = "not built", "run `harmonycell sandbox build`"
        return rep
    rep.image_id = img.short_id
    rep.image_inputs = img.labels.get(engine.LABEL_INPUTS)
    rep.backend = "docker"
    return rep


def _host_gpu() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
