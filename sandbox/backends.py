"""One interface, two backends: pick one by name.

``auto`` uses Docker when an engine answers and the sandbox image exists, else the local
backend with a loud warning. Asking for ``docker`` explicitly never falls back silently: it
raises a SandboxError saying what to do.
"""

from __future__ import annotations

import threading
import warnings
from typing import Literal, Protocol

from harmonycell.sandbox.local import LocalBackend
from harmonycell.sandbox.result import ExecutionResult, Job
from harmonycell.tools.errors import SandboxError

BackendName = Literal["auto", "docker", "local"]
CHOICES = ("auto", "docker", "local")


class Backend(Protocol):
    name: str

    def input_path(self, job: Job, name: str) -> str:
        """Where input ``name`` of ``job`` appears to the code inside."""

    def python(self) -> str:
        """The interpreter to run inside."""

    def gpu_available(self) -> bool: ...

    def run(self, job: Job, cancel: threading.Event | None = None) -> ExecutionResult: ...


class SandboxFallbackWarning(UserWarning):
    """``auto`` chose the local backend, which isolates nothing."""


def get_backend(name: str = "auto", image: str | None = None) -> Backend:
    if name not in CHOICES:
        raise SandboxError(f"unknown sandbox backend {name!r}", where="--backend",
                           fix=f"use one of: {', '.join(CHOICES)}")
    if name == "local":
        local = LocalBackend()
        warnings.warn(local.warning, SandboxFallbackWarning, stacklevel=2)
        return local
    from harmonycell.sandbox.docker_backend import DockerBackend

    if name == "docker":
        return DockerBackend(image=image)
    try:
        return DockerBackend(image=image)
    except SandboxError as why:
        local = LocalBackend()
        local.warning = f"Docker sandbox unavailable ({why.one_line()}); {local.warning}"
        warnings.warn(local.warning, SandboxFallbackWarning, stacklevel=2)
        return local
