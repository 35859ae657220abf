"""Replay a run: verify the hash chain and artifacts, and re-render the conversation."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from harmonycell.agents.cli.render import render_record
from harmonycell.tools.errors import InputError
from harmonycell.tools.record.transcript import read_records, verify as verify_chain


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
    for rec in read_records(run_dir / "transcript.jsonl"):
        if "_invalid" in rec:
            console.print(f"[red]{rec['_invalid']}[/]")
            continue
        render_record(console, rec)
    return 0
