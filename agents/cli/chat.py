"""``harmonycell chat``: the same team, with a person in the conversation.

The person says what they want in their own words (``policies.intent``); the chat restates it and
asks only what is missing. Wherever the chat waits, the person may ask a question instead: it is
answered from the run folder's records (``policies.answers``), recorded, and the pending question
is asked again. Before the search and between its rounds they may change course in words
(``Steer``): search changes travel to the Planner in the ``Approval``; data changes (drop an
input, hold out a cell type) need a new split, so this run stops and a new one starts from the
same inputs. After the run they ask about the result, or "run again with ...".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape

from harmonycell.agents.base import StepAgent
from harmonycell.agents.cli.predict import answer_prediction
from harmonycell.agents.cli.render import render_record
from harmonycell.agents.messages import Approval, Question, SearchDone, SearchReviewed, Steer, UnifyDone
from harmonycell.agents.policies.answers import answer, classify, is_question, planning_available
from harmonycell.agents.policies.intent import RunIntent, expand_files, read_intent, read_steer, read_task
from harmonycell.agents.policies.llm import LLMConfig
from harmonycell.agents.routing import derive
from harmonycell.agents.team import TEAM
from harmonycell.agents.summaries import summary
from harmonycell.tools.data.splits import match_contexts
from harmonycell.tools.errors import HarmonyCellError, InputError
from harmonycell.tools.record.runfolder import RunFolder
from harmonycell.tools.record.transcript import Transcript
from harmonycell.tools.schema import context_labels
from harmonycell.tools.search.actions import all_backbone_paths, not_for
from harmonycell.tools.tasks.registry import DEFAULT_KIND, hold_out_kind, kinds, task_kind

Ask = Callable[[str], str]
STEER_HELP = ("e.g. 'no generative models', '20 minutes', 'add 2 nodes', 'hold out LineA', 'drop labB'")


@dataclass
class Conversation:
    """What every turn needs: how to ask, where to show, the LLM (if any), and the run so far."""

    ask: Ask
    console: Console
    llm: LLMConfig | None = None
    run: RunFolder | None = None
    restart: list[Steer] = field(default_factory=list)  # data changes that need a new run
    intent_call: dict | None = None  # the LLM's reading of the request, for the new run's record
    transcript: Transcript | None = None  # the team's own while it runs: one writer keeps the chain whole
    files: list[str] = field(default_factory=list)  # inputs named before the run: questions read their audits
    _file_facts: list | None = None

    def _transcript(self) -> Transcript:
        return self.transcript or Transcript(self.run.root)

    def record(self, content) -> None:
        """A human turn on the run's record (outside the team: before or after it runs)."""
        rec = self._transcript().append("message", "User", type(content).__name__,
                                               content.model_dump(mode="json"))
        render_record(self.console, rec.model_dump(mode="json"), routes=CHAT_ROUTES)

    def reply(self, said: str, say: Callable | None = None) -> None:
        """Answer a question from the run's records; ``say`` records it (the team's ctx.say mid-run)."""
        if self.run is None:
            self.reply_before_run(said)
            return
        ans, call = answer(self.run, said, self.llm)
        if call is not None:
            self._transcript().append("llm_call", "User", "answer", {**call, "question": said})
        q = Question(said=said, answer=ans.text, topic=ans.topic, sources=ans.sources, by=ans.by)
        (say or self.record)(q)

    def reply_before_run(self, said: str) -> None:
        """No run folder yet: answer from the audits of the files already named (nothing to record in)."""
        if not self.files:
            self.console.print("[cyan]HarmonyCell:[/] I can answer that once I know the data: "
                               "first tell me the files and what to predict.")
            return
        from harmonycell.agents.facts import answer_from, file_facts

        if self._file_facts is None:
            self._file_facts = file_facts(self.files)
        text, sources = answer_from(self._file_facts, said)
        self.console.print(f"[cyan]HarmonyCell:[/] {escape(text)}"
                           + (f" [dim](from {escape(', '.join(sources))})[/]" if sources else ""), highlight=False)

    def wait(self, prompt: str, say: Callable | None = None) -> str:
        """Ask; while the person asks a question instead, answer it and ask again."""
        while True:
            said = self.ask(prompt).strip()
            if said and is_question(said):
                self.reply(said, say)
                continue
            return said


class User(StepAgent):
    """The person at the terminal: approves, sizes and steers the search, asks questions on the way."""

    description_text = "The person at the terminal: approves, sizes and steers the search."

    def __init__(self, ctx, conv: Conversation | Ask):
        super().__init__(ctx)
        self.conv = conv if isinstance(conv, Conversation) else Conversation(ask=conv, console=ctx.console)
        self.conv.run, self.conv.transcript = ctx.run, ctx.transcript

    def _say(self, content) -> None:
        self.ctx.say(self.name, content)

    def _contexts(self) -> list[str]:
        adata = self.ctx.cache.get("adata")
        return sorted(context_labels(adata.obs).unique()) if adata is not None else []

    def _steer(self, said: str) -> Steer | None:
        """A validated change of course, recorded; None when ``said`` is none (or was refused)."""
        inputs = [i.path for i in self.ctx.config.inputs]
        try:
            steer = read_steer(said, inputs)
            if steer is None:
                return None
            if steer.hold_out:
                match_contexts(steer.hold_out, self._contexts())  # a name not in the data is refused
            if steer.drop_inputs and len(steer.drop_inputs) >= len(inputs):
                raise InputError("dropping every input leaves nothing to model", where="drop", fix="keep one input")
            if not self._menu(set(self.ctx.config.exclude) | set(steer.exclude)):
                raise InputError("that excludes every backbone the search has", where="exclude",
                                 fix="exclude fewer paradigms or backbones")
        except HarmonyCellError as exc:
            self.ctx.console.print(f"[red]{escape(exc.one_line())}[/]")
            return None
        self._say(steer)
        return steer

    def _decide(self, prompt: str, budget: int) -> Approval | None:
        """The shared loop of both waits: y / n / N / a change / (questions answered in between).
        None: the person said go without changing the search (the caller decides what go means)."""
        changes: list[Steer] = []
        while True:
            said = self.conv.wait(prompt.format(budget=budget), say=self._say)
            low = said.lower()
            if low in {"", "y", "yes", "go", "ok"}:
                return Approval(approved=True, budget_nodes=budget, changes=changes,
                                note="; ".join(c.said for c in changes)) if changes else None
            if low in {"n", "no", "q", "quit", "stop"}:
                return Approval(approved=False, note="declined by the user")
            if low.isdigit() and int(low) > 0:
                return Approval(approved=True, budget_nodes=int(low), changes=changes, note=f"budget set to {low}")
            steer = self._steer(said)
            if steer is None:
                self.ctx.console.print(f"Answer y, n or a number of nodes; ask a question; or change course ({STEER_HELP}).")
                continue
            if steer.drop_inputs or steer.hold_out:
                self.conv.restart = [*changes, steer]
                return Approval(approved=False, changes=[*changes, steer],
                                note=f"the data changed ({steer.said!r}): a new run starts from the same inputs")
            changes.append(steer)
            budget += steer.add_nodes
            self.ctx.console.print(f"[cyan]HarmonyCell:[/] noted. {self._plan(changes)}")

    def _menu(self, banned: set[str]) -> list[str]:
        """The backbones the Planner's menu offers this task kind, less what was ruled out."""
        banned = banned | not_for(self.ctx.config.task)
        return [a for a in all_backbone_paths() if not banned & set(a.split("/"))]

    def _plan(self, changes: list[Steer]) -> str:
        left = self._menu(set(self.ctx.config.exclude).union(*(c.exclude for c in changes)))
        limit = next((c.time_limit_s for c in reversed(changes) if c.time_limit_s), self.ctx.config.time_limit_s)
        return (f"The search will try {', '.join(left[:3])}{' ...' if len(left) > 3 else ''}"
                + (f" within {limit / 60:g} min of training" if limit else "") + ".")

    def on_UnifyDone(self, done: UnifyDone) -> Approval:
        self.ctx.console.print(f"\n[bold]Unified data:[/] {summary('UnifyDone', done.model_dump())}")
        got = self._decide("Start the model search with {budget} node(s)? [y / n / a number; or ask; or change course]",
                           self.ctx.config.budget_nodes)
        return got or Approval(approved=True, budget_nodes=self.ctx.config.budget_nodes)

    def on_SearchDone(self, done: SearchDone) -> Approval | SearchReviewed:
        if done.best_node is None or self.conv.restart:  # stopped, or nothing to test: on to the end
            return SearchReviewed(**done.model_dump())
        self.ctx.console.print(f"\n[bold]Search round done:[/] {summary('SearchDone', done.model_dump())}")
        got = self._decide(f"Test {done.best_node} on the held-out split now? [y; or add nodes / change course; or ask]",
                           self.ctx.config.budget_nodes)
        if got is None or not got.approved or (got.budget_nodes or 0) <= done.n_nodes:
            return SearchReviewed(**done.model_dump())  # nothing more to search: on to the test
        return got


# Chat mode puts the person (the User agent's handlers) between the data and the search and between
# search rounds: they approve, size and steer it, or send the result on to the test
# (SearchReviewed). Their Steer and Question messages are recorded, not routed.
CHAT_ROUTES, CHAT_PRODUCES = derive((*TEAM, User))


# --- before the run: the request in the person's words ------------------------------------------

OPENING = ("What would you like to predict, and from which files? "
           "(paths, a folder or a glob, and the question in your own words)")


def task_question() -> str:
    """The chat's task question, offering each registered kind (read at each call)."""
    offers = [k.asked_as() for k in kinds()]
    listed = ", ".join(offers[:-1]) + ", or " + offers[-1] if len(offers) > 1 else offers[0]
    return f"What should the model predict: {listed}?"


def ask_files(conv: Conversation) -> list[str]:
    while True:
        said = conv.wait("Which .h5ad files? (paths, a folder or a glob)")
        try:
            files = [str(p) for tok in said.split() for p in expand_files(tok)]
            if not files:
                raise InputError("no file given", fix="type one or more paths, a folder or a glob")
            return files
        except HarmonyCellError as exc:
            conv.console.print(f"[red]{escape(exc.one_line())}[/]")


def ask_task(conv: Conversation, ambiguous: list[str] | None = None) -> tuple[str, str]:
    """(the kind's name, the words that decided it)."""
    question = task_question()
    prompt = question if not ambiguous else f"Your words fit more than one task ({'; '.join(ambiguous)}). {question}"
    while True:
        said = conv.wait(prompt)
        named = [k.name for k in kinds() if k.name == said.strip()]
        kind, because = (named[0], said.strip()) if named else read_task(said)[:2]
        if kind is None and said.strip() == "":
            kind, because = DEFAULT_KIND, "the default"
        if kind is not None:
            return kind, because
        examples = ", ".join(f"'{k.example_words()}'" for k in kinds())
        conv.console.print(f"[red]I could not tell the task from {said!r}[/]; say e.g. {examples}, "
                           f"or one of {', '.join(k.name for k in kinds())}")


def hold_out_in_files(names: list[str], files: list[str]) -> None:
    """Before the data is unified: each named cell type must be a value of some obs column."""
    from harmonycell.tools.data.audit import audit_h5ad
    from harmonycell.tools.data.splits import _unit_key

    values = {_unit_key(v) for f in files for col in audit_h5ad(f).obs for v in col.top_counts or col.sampled_values}
    for name in names:
        if _unit_key(name) not in values:
            raise InputError(f"no cell type named {name!r} in the inputs", where="hold out",
                             fix="name a cell type as it is written in the files")


def riding_questions(said: str) -> list[str]:
    """The questions asked alongside a request: sentences that are questions and name no task."""
    parts = [p.strip() for p in re.split(r"(?<=[?.!;])\s+|\s+(?:--|—)\s+", said) if p.strip()]
    return [p for p in parts if len(parts) > 1 and is_question(p) and read_task(p)[0] is None
            and not any("/" in w or w.endswith(".h5ad") for w in p.split())]


def understand(conv: Conversation, files: list[str], task: str | None) -> RunIntent:
    """The opening turns: the person's request, typed, restated, completed."""
    if files and task:
        return RunIntent(files=[str(f) for f in files], task=task, task_because="--task")
    while True:
        # the request itself is often a question ("how do knockouts we have not screened ...?"):
        # only words that say nothing about files or a task are answered as a question
        said = conv.ask(OPENING if not files else "What would you like to predict? (in your own words)").strip()
        try:
            intent, call = read_intent(" ".join([*map(str, files), said]), conv.llm)
            if not files and not intent.files and intent.task is None and is_question(said):
                conv.reply(said)
                continue
            if intent.hold_out:
                hold_out_in_files(intent.hold_out, intent.files)
            break
        except HarmonyCellError as exc:
            conv.console.print(f"[red]{escape(exc.one_line())}[/]")
    intent.said, conv.intent_call = said, call
    conv.files = list(intent.files)
    for q in riding_questions(said):  # "predict genes nobody tested -- which cells are controls?"
        conv.reply(q)
    if task:
        intent.task, intent.task_because = task_kind(task).name, "--task"
    conv.console.print(f"[cyan]HarmonyCell:[/] I understood: {escape(intent.understood())}"
                       + (f" [dim](read by {intent.by})[/]" if intent.by != "builtin" else ""))
    asked = not intent.files or intent.task is None or bool(intent.ambiguous)
    if not intent.files:
        intent.files = ask_files(conv)
    if intent.task is None or intent.ambiguous:
        intent.task, intent.task_because = ask_task(conv, intent.ambiguous)
        intent.ambiguous = []
    if intent.hold_out and not task_kind(intent.task).takes_hold_out:
        wanted = hold_out_kind().name
        conv.console.print(f"[cyan]HarmonyCell:[/] holding out cell types means the {wanted} task; "
                           f"switching from {intent.task}.")
        intent.task = wanted
    if asked:
        conv.console.print(f"[cyan]HarmonyCell:[/] so: {escape(intent.understood())}")
    return intent


def run_options(intent: RunIntent, budget: int, time_limit_s: float | None = None) -> dict:
    """The RunConfig options an intent sets (``budget``/``time_limit_s``: the command line's, used
    when the person said none)."""
    return {"budget_nodes": intent.budget_nodes or budget, "hold_out": intent.hold_out,
            "exclude": intent.exclude, "time_limit_s": intent.time_limit_s or time_limit_s}


def apply_steer(intent: RunIntent, changes: list[Steer], said: str = "") -> RunIntent:
    """The request for a new run: the old one with the person's changes."""
    files = [f for f in intent.files if Path(f).stem not in {d for c in changes for d in c.drop_inputs}]
    upd = {"files": files, "said": said or intent.said, "by": "builtin"}
    for c in changes:
        if c.hold_out:
            upd.update(hold_out=c.hold_out, task=hold_out_kind().name, task_because=f"hold out {', '.join(c.hold_out)}")
        if c.exclude:
            upd["exclude"] = sorted(set(intent.exclude) | set(c.exclude))
        if c.time_limit_s:
            upd["time_limit_s"] = c.time_limit_s
        if c.add_nodes:
            upd["budget_nodes"] = (intent.budget_nodes or 1) + c.add_nodes
    return intent.model_copy(update=upd)


# --- after the run ---------------------------------------------------------------------------

AFTER = ("Ask about the result (which model won, baselines, failures, the tree, a node's code), what a "
         "perturbation would do, 'run again with ...', or quit")


def after_run(conv: Conversation, intent: RunIntent) -> tuple[RunIntent, str] | None:
    """Questions about the finished run until quit; a 'run again with ...' returns the new request."""
    legacy = {"report": "show the report", "verdict": "is the report valid?", "nodes": "show the tree"}
    while True:
        said = conv.ask(AFTER).strip()
        low = said.lower()
        if low in {"", "q", "quit", "exit", "bye"}:
            return None
        if low.startswith(("run again", "rerun", "re-run", "again with")):
            words = low.split("with", 1)[1] if "with" in low else ""
            try:
                steer = read_steer(words, intent.files) or Steer(said=said)
                new = apply_steer(intent, [steer], said)
                nodes = next((int(w) for w in words.split() if w.isdigit()), None)
                kind, because, _ = read_task(words)
                if kind:
                    new = new.model_copy(update={"task": kind, "task_because": because})
                if nodes and "node" in words and not steer.add_nodes:
                    new = new.model_copy(update={"budget_nodes": nodes})
                if new.hold_out:
                    hold_out_in_files(new.hold_out, new.files)
            except HarmonyCellError as exc:
                conv.console.print(f"[red]{escape(exc.one_line())}[/]")
                continue
            conv.record(Steer(**{**steer.model_dump(), "said": said}))
            return new, said
        if low.startswith("node ") and len(low.split()) == 2:
            said = f"show {low.split()[1]}'s code"
        if answer_prediction(conv, said):  # "what would knocking out JAK2 do?" (agents/cli/predict.py)
            continue
        if classify(said) == "next" and planning_available():
            plan_next(conv, said)
            continue
        conv.reply(legacy.get(low, said))


def plan_next(conv: Conversation, said: str) -> None:
    """'What should we measure next?' hands over to experiment planning (``harmonycell plan``)."""
    from harmonycell.agents.cli.plan import plan_experiments

    raw = conv.wait("How many perturbations can the next experiment measure? [5]")
    try:
        n = int(raw or 5)
        plan = plan_experiments(conv.run.root, n, llm=conv.llm)
    except ValueError:
        conv.console.print(f"[red]{escape(raw)!r} is not a number[/]; ask again with a whole number")
        return
    except HarmonyCellError as exc:
        conv.console.print(f"[red]{escape(exc.one_line())}[/]")
        return
    picks = "\n".join(f"{p.rank}. {p.gene} (uncertainty {p.uncertainty:.3g}): {p.rationale}" for p in plan.picks)
    text = (f"experiment planning picked {len(plan.picks)} of {plan.n_candidates} candidate(s):\n{picks}\n"
            f"(written to plan.md and plan.csv; `harmonycell plan` runs it with more options)")
    conv.record(Question(said=said, answer=text, topic="next", sources=["plan.md", "plan.csv"], by=plan.policy))


def converse(files: list[Path] | None, task: str | None, ask: Ask, console: Console, start,
             llm: LLMConfig | None = None, budget: int = 2, time_limit_s: float | None = None,
             **options) -> RunFolder:
    """The whole conversation: request -> run (steered, questioned) -> questions -> maybe again."""
    conv = Conversation(ask=ask, console=console, llm=llm)
    intent = understand(conv, [str(f) for f in files or []], task)
    call = conv.intent_call
    while True:
        conv.restart = []
        opening = [("message", "User", "RunIntent", intent.record())]
        if call:
            opening.insert(0, ("llm_call", "User", "intent", call))
        run = start([Path(f) for f in intent.files], intent.task, person=lambda ctx: User(ctx, conv),
                    opening=opening, **run_options(intent, budget, time_limit_s), **options)
        conv.run, conv.transcript, call = run, None, None
        if conv.restart:
            intent = apply_steer(intent, conv.restart)
            console.print(f"[cyan]HarmonyCell:[/] a new run, as asked: {escape(intent.understood())}")
            continue
        again = after_run(conv, intent)
        if again is None:
            return run
        intent = again[0]
        console.print(f"[cyan]HarmonyCell:[/] running again: {escape(intent.understood())}")

