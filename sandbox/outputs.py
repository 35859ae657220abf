"""Helpers shared by the backends: output hashing, log tails, traceback trimming."""

from __future__ import annotations

import re
from pathlib import Path

from harmonycell.sandbox.result import OutputFile
from harmonycell.tools.record.atomic import sha256_file

LOG_NAMES = {"stdout.log", "stderr.log"}
TAIL_CHARS = 4000
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+, in ')
# Frames of the import machinery that loads the model module: noise for whoever fixes the model.
_MACHINERY = ("<frozen importlib._bootstrap",)


def collect_outputs(workdir: Path) -> list[OutputFile]:
    files = []
    for p in sorted(workdir.rglob("*")):
        if p.is_file() and p.name not in LOG_NAMES:
            files.append(OutputFile(path=str(p.relative_to(workdir)), sha256=sha256_file(p),
                                    bytes=p.stat().st_size))
    return files


def trim_frames(text: str, own_files: list[str]) -> str:
    """Drop traceback frames that belong to ``own_files`` (and the import machinery), so the
    traceback a Debugger reads starts at the generated code. A note says how many were hidden."""
    if not own_files:
        return text
    own = set(own_files)
    out: list[str] = []
    lines = text.splitlines(keepends=True)
    i, hidden = 0, 0
    while i < len(lines):
        m = _FRAME.match(lines[i])
        if m and (m["file"] in own or m["file"].startswith(_MACHINERY)):
            hidden += 1
            i += 1
            # the frame's source line and 3.11 caret lines are indented by four spaces
            while i < len(lines) and lines[i].startswith("    "):
                i += 1
            continue
        if hidden:
            out.append(_note(hidden))
            hidden = 0
        out.append(lines[i])
        i += 1
    if hidden:
        out.append(_note(hidden))
    return "".join(out)


def _note(n: int) -> str:
    return f"  ({n} sandbox harness frame{'s' if n > 1 else ''} hidden)\n"


def tail(path: Path, n_chars: int = TAIL_CHARS, own_files: list[str] | None = None) -> str:
    if not path.exists():
        return ""
    size = path.stat().st_size
    with open(path, "rb") as fh:  # read only the end: a chatty model may log gigabytes
        fh.seek(max(0, size - 4 * n_chars))
        data = fh.read().decode("utf-8", errors="replace")
    return trim_frames(data, own_files or [])[-n_chars:]
