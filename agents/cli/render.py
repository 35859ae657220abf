"""Terminal rendering of transcript records, shared by live runs and ``replay``."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from harmonycell.agents.team import ROUTES
from harmonycell.agents.summaries import fmt_value, summary


COLORS = {
    "user": "bold white", "DataAuditor": "cyan", "Unifier": "blue", "Planner": "magenta",
    "Coder": "green", "Debugger": "yellow", "Evaluator": "bright_cyan", "Judge": "bold red",
    "User": "bold white",
}


def render_record(console: Console, rec: dict, routes: dict = ROUTES) -> None:
    """``routes``: the team's that wrote the record (the chat's, ``agents.cli.chat.CHAT_ROUTES``,
    where a person was in it), for the arrow to who speaks next."""
    src, type_, kind = rec["source"], rec["type"], rec["kind"]
    color = COLORS.get(src, "white")
    worker = f"[magenta]{rec['worker']}[/] " if rec.get("worker") else ""
    if kind == "message":
        text = summary(type_, rec.get("content") or {})
        nxt = next((v for k, v in routes.items() if k.__name__ == type_), None)
        arrow = f" -> {nxt}" if nxt else ""
        console.print(f"[dim]{rec['seq']:>4}[/] {worker}[{color}]{src}[/]{arrow} [bold]{type_}[/]: {escape(text)}")
    else:
        content = rec.get("content") or {}
        result = content.get("result") if isinstance(content, dict) else None
        short = summary_tool(result)
        console.print(f"[dim]{rec['seq']:>4}   {worker}{src} {kind} {type_}{': ' + escape(short) if short else ''}[/]")


def summary_tool(result) -> str:
    if isinstance(result, dict):
        keys = [k for k in ("status", "wall_s", "n_obs", "n_vars", "x_kind", "path") if k in result]
        return ", ".join(f"{k}={fmt_value(result[k])}" for k in keys)
    return "" if result is None else str(result)[:120]
