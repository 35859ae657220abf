"""One interface, three backends: pick one by name.

``docker`` and ``bwrap`` are walls; ``unsafe-local`` is a plain child process and says so on
every result. ``auto`` uses Docker when an engine answers and the sandbox image exists, else
bubblewrap; where neither works it stops with a message naming both and ``--backend
unsafe-local``, unless the caller allows the unwalled fallback (only for code the builtin Coder
writes from the project's own templates), which is then said loudly. A backend asked for by name
never falls back silently: it raises a SandboxError saying what to do.
"""

from __future__ import annotations

import threading
import warnings
from typing import Literal, Protocol

from harmonycell.sandbox.local import LocalBackend
from harmonycell.sandbox.result import ExecutionResult, Job
from harmonycell.tools.errors import SandboxError

BackendName = Literal["auto", "docker", "bwrap", "unsafe-local"]
CHOICES = ("auto", "docker", "bwrap", "unsafe-local")
ALIASES = {"local": "unsafe-local"}  # the old name of the plain child process
ISOLATING = ("docker", "bwrap")  # backends that are a wall; anything else ran unisolated
HELP = "sandbox: auto (docker, else bwrap) | docker | bwrap | unsafe-local (no isolation)"


class Backend(Protocol):
    name: str
    isolated: bool

    def input_path(self, job: Job, name: str) -> str:
        """Where input ``name`` of ``job`` appears to the code inside."""

    def python(self) -> str:
        """The interpreter to run inside."""

    def gpu_available(self) -> bool: ...

    def run(self, job: Job, cancel: threading.Event | None = None) -> ExecutionResult: ...


class SandboxFallbackWarning(UserWarning):
    """The backend in use isolates nothing (asked for, or the builtin-code fallback)."""


def is_isolated(backend_name: str | None) -> bool:
    return backend_name in ISOLATING


def _unsafe(reason: str | None = None) -> LocalBackend:
    local = LocalBackend()
    if reason:
        local.warning = f"{reason}; {local.warning}"
    warnings.warn(local.warning, SandboxFallbackWarning, stacklevel=3)
    return local


def get_backend(name: str = "auto", image: str | None = None, *,
                allow_unwalled: bool = False) -> Backend:
    """The backend called ``name``. ``allow_unwalled``: ``auto`` may fall back to unsafe-local
    where no wall exists (only for builtin-template code; said on every result)."""
    name = ALIASES.get(name, name)
    if name not in CHOICES:
        raise SandboxError(f"unknown sandbox backend {name!r}", where="--backend",
                           fix=f"use one of: {', '.join(CHOICES)}")
    if name == "unsafe-local":
        return _unsafe()
    from harmonycell.sandbox.bwrap import BwrapBackend
    from harmonycell.sandbox.docker_backend import DockerBackend

    if name == "docker":
        return DockerBackend(image=image)
    if name == "bwrap":
        return BwrapBackend()
    try:
        return DockerBackend(image=image)
    except SandboxError as no_docker:
        try:
            return BwrapBackend()
        except SandboxError as no_bwrap:
            why = f"docker: {no_docker.what}; bwrap: {no_bwrap.what}"
            if allow_unwalled:
                return _unsafe(f"no isolating sandbox ({why}); the builtin templates' code runs unisolated")
            raise SandboxError(
                f"no isolating sandbox: {why}", where="--backend auto",
                fix=f"start a Docker engine and run `harmonycell sandbox build` ({no_docker.fix}), "
                    f"or install bubblewrap ({no_bwrap.fix}); or pass --backend unsafe-local to run "
                    "the code as a plain child process with NO isolation") from None
