"""Drive the team on a prepared run folder: what ``run``, ``chat``, ``resume`` and ``replay --rerun``
share. The terminal is handed to the run here (its record sink and progress bars)."""

from __future__ import annotations

import logging
import signal
import warnings
from functools import partial
from typing import Callable

from rich.console import Console

from harmonycell.agents.cli.chat import CHAT_PRODUCES, CHAT_ROUTES
from harmonycell.agents.cli.progress import node_progress
from harmonycell.agents.cli.render import render_record
from harmonycell.agents.context import RunContext
from harmonycell.agents.messages import RunRequest
from harmonycell.agents.policies.llm import LLMConfig, session_for_run, usage_summary
from harmonycell.agents.team import build_team, run_team
from harmonycell.sandbox.backends import SandboxFallbackWarning, get_backend
from harmonycell.sandbox.executors import make_executor
from harmonycell.tools.errors import HarmonyCellError
from harmonycell.tools.record.runfolder import RunFolder
from harmonycell.tools.record.transcript import Transcript
from harmonycell.tools.report.publish import write_report_html

console = Console()
err = Console(stderr=True, soft_wrap=True)
Person = Callable[[RunContext], object]  # chat mode: makes the User agent for a run's context


def drive(run: RunFolder, person: Person | None = None, llm_client=None) -> None:
    """Run (or resume) the team on a prepared run folder; mark it failed or complete.

    With ``person`` (chat mode) the User agent it makes joins the team between the data and the
    search and between search rounds; ``llm_client`` replaces the configured endpoint
    (``replay --rerun`` serves recorded replies).
    """
    cfg = run.config()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SandboxFallbackWarning)
        # only the builtin Coder's template code may run unwalled where no wall exists
        backend = get_backend(cfg.backend, allow_unwalled=cfg.llm is None)
    ctx = RunContext(run=run, config=cfg, transcript=Transcript(run.root), backend=backend,
                     console=console, llm=LLMConfig.model_validate(cfg.llm) if cfg.llm else None,
                     sink=partial(render_record, console), progress=partial(node_progress, console))
    if ctx.llm is not None:  # one session for all agents: one ledger, one budget
        ctx.llm_session = session_for_run(ctx.llm, ctx.transcript, client=llm_client)
    for w in caught:  # said loudly, and on the record
        err.print(f"[bold yellow]warning:[/] {w.message}")
        ctx.transcript.append("event", "harmonycell", "sandbox_warning", {"warning": str(w.message)})
    team = None
    if person is not None:
        ctx.sink = partial(render_record, console, routes=CHAT_ROUTES)
        team = build_team(ctx, extra=[person(ctx)], routes=CHAT_ROUTES, produces=CHAT_PRODUCES)
    console.print(f"[bold]HarmonyCell[/] run [cyan]{cfg.run_id}[/] -> {run.root}")

    def interrupt(signum, frame):  # stop the sandbox job too, not just this process
        ctx.cancel.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    # agents' failures are re-raised as themselves and recorded in the transcript; the runtime's
    # own logging of the same errors (and of cancelled tasks after Ctrl-C) is noise here
    for name in ("autogen_core", "autogen_agentchat", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        ctx.executor = make_executor(cfg.executor, backend, cfg.backend, cfg.workers, cfg.ray_address,
                                     allow_unwalled=cfg.llm is None)
        verdict = run_team(ctx, RunRequest(inputs=[i.path for i in cfg.inputs], task=cfg.task,
                                           seed=cfg.seed), team)
    except BaseException as exc:
        if ctx.cancel.is_set():
            reason = "interrupted by the user; continue with `harmonycell resume`"
        elif isinstance(exc, HarmonyCellError):
            reason = exc.one_line()
        else:
            reason = f"{type(exc).__name__}: {exc}"
        ctx.transcript.append("event", "harmonycell", "run_failed", {"error": reason})
        run.set_status("failed", reason, llm=llm_totals(ctx))
        if ctx.cancel.is_set():
            err.print(f"run {cfg.run_id} {reason}")
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
        if ctx.executor is not None:
            ctx.executor.close()
    run.set_status("complete", llm=llm_totals(ctx))
    write_report_html(run.root)  # again, now with the Verdict record and the final state
    console.print(f"report: {run.report_md} (and {run.root / 'report.html'})")
    # the last line says both verdicts and what was held out (never one word)
    console.print(f"\n[bold]{verdict.headline or ('VALID' if verdict.valid else 'INVALID')}[/]",
                  highlight=False, soft_wrap=True)


def llm_totals(ctx: RunContext) -> dict | None:
    """The run's LLM calls, tokens, cost and latency (None: no LLM was configured)."""
    return usage_summary(ctx.llm_session.usage) if ctx.llm_session is not None else None
