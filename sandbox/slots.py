"""How a machine is shared between nodes trained at once: one slot per worker, each with its own
cores and at most one GPU (two nodes never share a GPU, where memory is the scarce thing)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    worker: int
    cores: tuple[int, ...]
    gpu_ids: tuple[int, ...] | None  # None: the backend's default; (): no GPU; (i,): GPU i only

    @property
    def label(self) -> str:
        return f"w{self.worker}"

    @property
    def threads(self) -> int:
        return len(self.cores)


def plan_slots(workers: int, cores: list[int], n_gpus: int = 0) -> list[Slot]:
    """``workers`` slots over ``cores``: contiguous equal shares (the remainder to the first
    slots), at least one core each (more workers than cores share them round-robin). With GPUs,
    worker i gets GPU i; workers beyond the GPU count train on CPU (an explicit empty GPU list)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    cores = sorted(cores)
    slots = []
    if workers <= len(cores):
        share, extra = divmod(len(cores), workers)
        start = 0
        for i in range(workers):
            n = share + (1 if i < extra else 0)
            slots.append(tuple(cores[start:start + n]))
            start += n
    else:
        slots = [(cores[i % len(cores)],) for i in range(workers)]
    out = []
    for i, c in enumerate(slots):
        gpus = None if n_gpus == 0 else ((i,) if i < n_gpus else ())
        out.append(Slot(worker=i, cores=c, gpu_ids=gpus))
    return out


def host_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def host_gpu_count() -> int:
    """CUDA devices torch sees on this host (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
