"""``harmonycell chat``: the same team, with a person in the conversation.

The person names the inputs and the task, sees what the DataAuditor and Unifier found, approves
(and may size) the search, and afterwards asks about the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markdown import Markdown

from harmonycell.agents.base import StepAgent
from harmonycell.agents.messages import Approval, UnifyDone
from harmonycell.agents.cli.render import summary
from harmonycell.tools.errors import HarmonyCellError
from harmonycell.tools.record.runfolder import RunFolder, check_h5ad
from harmonycell.tools.schema import TaskKind

Ask = Callable[[str], str]


class User(StepAgent):
    """A user proxy: turns the person's typed answers into typed messages."""

    description_text = "The person at the terminal: approves the search and sets its budget."

    def __init__(self, ctx, ask: Ask):
        super().__init__(ctx)
        self.ask = ask

    def on_UnifyDone(self, done: UnifyDone) -> Approval:
        self.ctx.console.print(f"\n[bold]Unified data:[/] {summary('UnifyDone', done.model_dump())}")
        budget = self.ctx.config.budget_nodes
        while True:
            answer = self.ask(f"Start the model search with {budget} node(s)? [y / n / a number of nodes]").strip().lower()
            if answer in {"", "y", "yes"}:
                return Approval(approved=True, budget_nodes=budget)
            if answer in {"n", "no", "q", "quit"}:
                return Approval(approved=False, note="declined at the search step")
            if answer.isdigit() and int(answer) > 0:
                return Approval(approved=True, budget_nodes=int(answer), note=f"budget set to {answer}")
            self.ctx.console.print("Please answer y, n, or a positive number.")


def ask_inputs(ask: Ask, console: Console) -> list[Path]:
    while True:
        raw = ask("Which .h5ad files? (paths separated by spaces)")
        paths = [Path(p).expanduser() for p in raw.split()]
        try:
            if not paths:
                raise HarmonyCellError("no file given", fix="type one or more paths")
            for p in paths:
                check_h5ad(p)
            return paths
        except HarmonyCellError as exc:
            console.print(f"[red]{exc.one_line()}[/]")


def ask_task(ask: Ask, console: Console) -> str:
    kinds = [k.value for k in TaskKind]
    while True:
        raw = ask(f"Which task? ({' / '.join(kinds)}) [unseen-perturbation]").strip() or kinds[0]
        if raw in kinds:
            return raw
        console.print(f"[red]unknown task {raw!r}[/]; choose one of {', '.join(kinds)}")


def answer_questions(run: RunFolder, ask: Ask, console: Console) -> None:
    """After the verdict: show the report, the search, a node's log, until the person quits."""
    help_text = "report | nodes | node <id> | verdict | quit"
    while True:
        q = ask(f"Ask about the result ({help_text})").strip()
        if q in {"", "q", "quit", "exit"}:
            return
        if q == "report":
            console.print(Markdown(run.report_md.read_text()))
        elif q == "verdict":
            console.print((run.root / "verdict.json").read_text())
        elif q == "nodes":
            console.print(run.tree_json.read_text())
        elif q.startswith("node "):
            node = run.node_dir(q.split(maxsplit=1)[1])
            log = node / "stdout.log"
            console.print(log.read_text()[-3000:] if log.exists() else f"no node folder {node.name}")
        else:
            console.print(f"I can answer: {help_text}")
