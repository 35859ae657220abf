"""Replay a run: verify the hash chain and artifacts, re-render the conversation, or re-execute
it in a fresh folder and compare every decision and metric (``--rerun``)."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console

from harmonycell.agents.cli.chat import CHAT_ROUTES
from harmonycell.agents.cli.drive import drive
from harmonycell.agents.cli.render import render_record
from harmonycell.agents.policies.llm import ReplayClient
from harmonycell.agents.team import ROUTES
from harmonycell.tools.record import atomic
from harmonycell.tools.record.rerun_compare import FLOAT_TOL, compare, run_digest
from harmonycell.tools.record.runfolder import RunFolder, create_run_from
from harmonycell.tools.search.tree import Tree
from harmonycell.tools.errors import InputError
from harmonycell.tools.record.transcript import Transcript, read_records, verify as verify_chain


def replay(run_dir: Path, verify: bool, console: Console, anchor: str | None = None) -> int:
    run_dir = Path(run_dir)
    if not (run_dir / "transcript.jsonl").exists():
        raise InputError("no transcript.jsonl here", where=str(run_dir),
                         fix="pass a run folder, e.g. runs/<run-id>")
    if anchor is not None and not verify:
        raise InputError("--anchor needs --verify", where="replay", fix="add --verify")
    if verify:
        res = verify_chain(run_dir, anchor=anchor)
        if not res.ok:
            where = f"at record {res.first_bad}" if res.first_bad is not None else "anchor"
            console.print(f"[bold red]FAILED[/] {where}: {res.reason}", highlight=False)
            return 1
        pinned = (f"; anchor {anchor[:16]}... pins records 0..{res.anchored_at}"
                  if anchor is not None else "")
        console.print(f"[green]OK[/]: {res.n_records} records, hash chain and artifacts intact{pinned}",
                      highlight=False)
        return 0
    recs = list(read_records(run_dir / "transcript.jsonl"))
    chat = any(r.get("source") == "User" for r in recs)  # a person was in the conversation
    for rec in recs:
        if "_invalid" in rec:
            console.print(f"[red]{rec['_invalid']}[/]")
            continue
        render_record(console, rec, routes=CHAT_ROUTES if chat else ROUTES)
    return 0


def recorded_duration_s(records: list[dict]) -> float | None:
    """Wall time of the recorded run: its first record to its last."""
    stamps = [datetime.fromisoformat(r["ts"]) for r in records if "ts" in r]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def llm_replay(cfg, records: list[dict]):
    """For a run that used LLM policies, a client serving its recorded replies back in order (no
    endpoint); None for builtin runs."""
    if cfg.llm is None:
        return None
    calls = [r["content"] for r in records if r.get("kind") == "llm_call" and isinstance(r.get("content"), dict)
             and "messages" in r["content"] and "reply" in r["content"]]
    if not calls:
        raise InputError("this run used LLM policies and its transcript holds no recorded replies "
                         "(llm_call records with the request messages and the reply)",
                         where="replay --rerun",
                         fix="re-run only runs recorded with full LLM calls; builtin runs re-run as they are")
    return ReplayClient(calls)


def search_as_recorded(run, cfg, records: list[dict]) -> dict:
    """The search's options that reproduce the recorded decisions: the recorded knowledge-base
    retrieval served back (today's KB holds the recorded run itself), and, for a search the clock
    cut short, the number of nodes it trained instead of a wall-clock limit."""
    kb = next((r["content"] for r in records if r.get("kind") == "event" and r.get("type") == "knowledge_base"), None)
    if kb is not None and kb.get("mode") == "warm start" and "priors" not in kb:
        raise InputError("this run was warm-started from a knowledge base whose priors the transcript "
                         "does not record, so its search cannot be reproduced", where="replay --rerun",
                         fix="re-run runs recorded by this version, or runs made with --no-kb")
    replay_kb = ({"kb": {k: v for k, v in kb.items() if k not in ("priors", "profile", "replayed")},
                  "priors": kb.get("priors") or {}} if kb is not None else None)
    tree = Tree.load(run.tree_json)
    budget = len(tree.trained()) if getattr(tree, "cut_short", False) else cfg.budget_nodes
    return {"budget_nodes": max(1, budget), "time_limit_s": None, "use_kb": kb is not None,
            "kb_replay": replay_kb}


def rerun(run_dir: Path, out: Path | None, console: Console) -> int:
    """Re-execute a recorded run in a fresh folder and compare every decision and metric."""
    run = RunFolder(run_dir)
    if not run.task_yaml.exists():
        raise InputError("no task.yaml here", where=str(run_dir), fix="pass a run folder, e.g. runs/<run-id>")
    checked = verify_chain(run.root)
    if not checked.ok:
        console.print(f"[bold red]FAILED[/]: the recorded transcript does not verify "
                      f"(record {checked.first_bad}: {checked.reason}); nothing to re-run against",
                      highlight=False)
        return 1
    cfg = run.config()
    for f in cfg.inputs:
        if not Path(f.path).exists() or atomic.sha256_file(f.path) != f.sha256:
            raise InputError("input missing or changed since the run was recorded", where=f.path,
                             fix="restore the original file (its sha256 is in task.yaml)")
    recorded = list(read_records(run.transcript))
    client = llm_replay(cfg, recorded)
    ran_on = next((r["content"]["backend"] for r in recorded if r.get("type") == "NodeExecuted"), cfg.backend)
    out = Path(out) if out else run.root.parent / "reruns"
    # the recorded configuration (steering included) with only what a rerun must change: its id,
    # the backend the nodes really ran on, one node at a time (the recorded order of decisions),
    # and the search options that reproduce the recorded search
    new = create_run_from(out, cfg, run_id=f"{cfg.run_id}-rerun-{secrets.token_hex(2)}", backend=ran_on,
                          executor="local", workers=None, ray_address=None,
                          **search_as_recorded(run, cfg, recorded))
    t0 = time.monotonic()
    drive(new, llm_client=client)
    took = time.monotonic() - t0
    result = compare(recorded, read_records(new.transcript), run_digest(run.root), run_digest(new.root))
    Transcript(new.root).append("event", "harmonycell", "rerun_compared",
                                {"recorded_run": cfg.run_id, "recorded_head": recorded[-1]["hash"],
                                 "seconds": round(took, 1), **result.model_dump(mode="json")})
    before = recorded_duration_s(recorded)
    timing = f"rerun {took:.1f} s" + (f" vs {before:.1f} s recorded ({took / before:.2f}x)" if before else "")
    if result.same:
        console.print(f"[green]SAME[/]: {result.n_records} decisions and {result.n_numbers} numbers "
                      f"match the recorded run (largest difference {result.max_abs_diff:.2g}, "
                      f"tolerance {FLOAT_TOL:g}); {timing}; rerun folder {new.root}", highlight=False)
        return 0
    console.print(f"[bold red]DIVERGED[/]: {result.divergence.line()}; {timing}; rerun folder {new.root}",
                  highlight=False)
    return 1
