"""Replay a run: verify the hash chain and artifacts, and re-render the conversation."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from harmonycell.agents.cli.render import render_record
from harmonycell.tools.errors import InputError
from harmonycell.tools.record.transcript import read_records, verify as verify_chain


def replay(run_dir: Path, verify: bool, console: Console) -> int:
    run_dir = Path(run_dir)
    if not (run_dir / "transcript.jsonl").exists():
        raise InputError("no transcript.jsonl here", where=str(run_dir),
                         fix="pass a run folder, e.g. runs/<run-id>")
    if verify:
        res = verify_chain(run_dir)
        if not res.ok:
            console.print(f"[bold red]FAILED[/] at record {res.first_bad}: {res.reason}")
            return 1
        console.print(f"[green]OK[/]: {res.n_records} records, hash chain and artifacts intact")
        return 0
    recs = list(read_records(run_dir / "transcript.jsonl"))
    chat = any(r.get("source") == "User" for r in recs)  # a person was in the conversation
    for rec in recs:
        if "_invalid" in rec:
            console.print(f"[red]{rec['_invalid']}[/]")
            continue
        render_record(console, rec, chat=chat)
    return 0
