"""Helpers shared by the backends: output hashing and log tails."""

from __future__ import annotations

from pathlib import Path

from harmonycell.sandbox.result import OutputFile
from harmonycell.tools.atomic import sha256_file

LOG_NAMES = {"stdout.log", "stderr.log"}


def collect_outputs(workdir: Path) -> list[OutputFile]:
    files = []
    for p in sorted(workdir.rglob("*")):
        if p.is_file() and p.name not in LOG_NAMES:
            files.append(OutputFile(path=str(p.relative_to(workdir)), sha256=sha256_file(p),
                                    bytes=p.stat().st_size))
    return files


def tail(path: Path, n_chars: int = 4000) -> str:
    if not path.exists():
        return ""
    data = path.read_bytes()[-n_chars:]
    return data.decode("utf-8", errors="replace")
