"""A live progress bar for a node training in the sandbox.

The harness appends one JSON line per epoch to ``train_log.jsonl`` in the node folder (the one
folder it may write); the host follows that file, so the bar needs no channel into the sandbox.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def last_epoch(log: Path) -> dict | None:
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue
    return None


@contextmanager
def node_progress(console: Console, node_dir: Path, label: str, epochs: int,
                  every_s: float = 0.5) -> Iterator[None]:
    stop = threading.Event()
    progress = Progress(TextColumn("  [green]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[loss]}"), TimeElapsedColumn(),
                        console=console, transient=True)
    task = progress.add_task(label, total=epochs, loss="")

    def follow() -> None:
        while not stop.wait(every_s):
            rec = last_epoch(node_dir / "train_log.jsonl")
            if rec:
                progress.update(task, completed=rec["epoch"] + 1,
                                loss=f"held-out loss {rec['stop_loss']:.4f}")

    watcher = threading.Thread(target=follow, daemon=True)
    with progress:
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
