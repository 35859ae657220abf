"""`harmonycell kb list | show ID | forget ID | forget-expert ID`: what the knowledge base remembers
across runs, and the expert models that beat HarmonyCell's pick."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(name="kb", no_args_is_help=True,
                  help="The knowledge base that warm-starts the search (one entry per finished run).")
console = Console()
KB_OPTION = typer.Option(None, "--kb", help="knowledge base file; default: the user's data directory")


def _kb(path: Optional[Path]):
    from harmonycell.tools.search.knowledge import KnowledgeBase

    return KnowledgeBase(path.expanduser() if path else None)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


@app.command("list")
def list_cmd(kb: Optional[Path] = KB_OPTION) -> None:
    """One line per stored run: id, run, task kind, start mode, nodes, selected path, reward."""
    store = _kb(kb)
    runs, wins = store.runs(), store.expert_wins()
    if not runs and not wins:
        console.print(f"knowledge base {store.path}: empty")
        return
    if runs:
        table = Table(title=f"knowledge base {store.path}")
        for col in ("id", "run", "created", "task", "start", "nodes", "selected path", "reward"):
            table.add_column(col)
        for r in runs:
            table.add_row(str(r.id), r.run_id, r.created, r.task_kind, r.start, str(len(r.nodes)),
                          r.selected_path or "-", _fmt(r.selected_reward))
        console.print(table)
    if wins:
        table = Table(title=f"expert models that beat HarmonyCell's pick ({store.path})")
        for col in ("id", "created", "task", "expert", "metric", "expert - ours [95% CI]", "n",
                    "tried first on a similar task"):
            table.add_column(col)
        for w in wins:
            table.add_row(str(w.id), w.created, w.task, w.expert, w.metric,
                          f"{w.delta:+.3f} [{w.lo:.3f}, {w.hi:.3f}]", str(w.n), w.backbone)
        console.print(table)


@app.command()
def show(kb_id: int = typer.Argument(..., metavar="ID", help="an id from `harmonycell kb list`"),
         kb: Optional[Path] = KB_OPTION) -> None:
    """A stored run: its task profile, every node's action path, reward and status."""
    r = _kb(kb).get(kb_id)
    console.print(f"[bold]{r.id}[/] run {r.run_id} ({r.created}), task {r.task_kind}, start: {r.start}")
    console.print(f"profile: {r.profile}", highlight=False)
    console.print(f"selected: {r.selected_path or '-'} (reward {_fmt(r.selected_reward)})")
    table = Table()
    for col in ("action path", "status", "validation metric", "reward"):
        table.add_column(col)
    for n in r.nodes:
        table.add_row(n.action, n.status, _fmt(n.val_metric), _fmt(n.reward))
    console.print(table)


@app.command()
def forget(kb_id: int = typer.Argument(..., metavar="ID", help="an id from `harmonycell kb list`"),
           kb: Optional[Path] = KB_OPTION) -> None:
    """Delete a stored run (its profile and nodes)."""
    store = _kb(kb)
    store.forget(kb_id)
    console.print(f"forgot run {kb_id} from {store.path}")


@app.command("forget-expert")
def forget_expert(win_id: int = typer.Argument(..., metavar="ID", help="an expert result's id from `harmonycell kb list`"),
                  kb: Optional[Path] = KB_OPTION) -> None:
    """Delete a stored expert result (a similar task then no longer tries its backbone first)."""
    store = _kb(kb)
    store.forget_expert_win(win_id)
    console.print(f"forgot expert result {win_id} from {store.path}")
