"""The run transcript: an append-only, hash-chained JSON-lines log of everything that happened.

Each record carries the sha256 of the previous record (``prev``) and its own hash (``hash``,
computed over the record without that field), so editing, inserting, deleting or reordering any
record breaks the chain at a record ``verify`` can name. Artifacts are referenced by path
(relative to the run folder) and sha256, so a changed file is caught too; a file recorded again
later (a node re-run by the Debugger) is checked against its latest record.

Append-only: reopening a transcript (every ``resume``) checks the whole chain and never removes a
record. The one exception is a torn final line (incomplete JSON at the end of the file, left by a
kill mid-write): it is moved aside to ``transcript.jsonl.torn`` and the move is recorded. Any
other unreadable or broken record stops the reopening with an error naming it, file untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, Field

from harmonycell.tools.errors import TranscriptError
from harmonycell.tools.record.atomic import sha256_file

GENESIS = "0" * 64
Kind = Literal["message", "tool_call", "llm_call", "event"]


class ArtifactRef(BaseModel):
    path: str  # relative to the run folder
    sha256: str


class Record(BaseModel):
    seq: int
    ts: str
    kind: Kind
    source: str
    type: str
    content: Any = None
    artifacts: list[ArtifactRef] = Field(default_factory=list)
    worker: str | None = None  # parallel search: which worker (w0, w1, ...) said it
    prev: str
    hash: str = ""


def canonical_bytes(record: dict) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def record_hash(record: dict) -> str:
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def artifact(run_dir: Path, path: Path) -> ArtifactRef:
    path = Path(path)
    rel = path.relative_to(run_dir) if path.is_absolute() else path
    return ArtifactRef(path=str(rel), sha256=sha256_file(Path(run_dir) / rel))


class Transcript:
    """Appends records to ``<run_dir>/transcript.jsonl``; resumes an existing chain."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir).resolve()
        self.path = self.run_dir / "transcript.jsonl"
        self._seq, self._prev = 0, GENESIS
        self._torn: dict | None = None
        self._lock = threading.Lock()
        if self.path.exists():
            self._recover()
        if self._torn is not None:  # on the record: a line was moved out of the transcript
            self.append("event", "harmonycell", "torn_tail_moved", self._torn)

    def _recover(self) -> None:
        """Continue after the last record, after checking the chain (see the module docstring)."""
        raw = self.path.read_bytes()
        body, torn = split_torn_tail(raw)
        prev, seq = GENESIS, 0
        for lineno, line in enumerate(body.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TranscriptError(f"record at line {lineno} is not valid JSON ({exc.msg}); "
                                      "the transcript was damaged after it was written",
                                      where=str(self.path),
                                      fix="restore the transcript from a copy; `harmonycell replay RUN --verify` "
                                          "names the first bad record") from None
            problem = chain_problem(rec, seq, prev)
            if problem:
                raise TranscriptError(problem, where=f"{self.path} line {lineno}",
                                      fix="restore the transcript from a copy; the run cannot be resumed on a broken chain")
            prev, seq = rec["hash"], seq + 1
        self._seq, self._prev = seq, prev
        if body and not body.endswith(b"\n"):  # a complete last record without its newline
            with open(self.path, "ab") as fh:
                fh.write(b"\n")
        if torn:
            aside = self.path.with_name(self.path.name + ".torn")
            with open(aside, "ab") as fh:  # kept, never overwritten: several crashes, several tails
                fh.write(torn + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            with open(self.path, "r+b") as fh:
                fh.truncate(len(body))
                fh.flush()
                os.fsync(fh.fileno())
            self._torn = {"moved_to": aside.name, "bytes": len(torn), "after_record": seq - 1,
                          "sha256": hashlib.sha256(torn).hexdigest()}

    def append(self, kind: Kind, source: str, type_: str, content: Any = None,
               artifacts: list[ArtifactRef] | None = None, worker: str | None = None) -> Record:
        """``worker``: the parallel worker that produced the record (absent from the one-at-a-time
        search's records). Appends are serialised: workers' records interleave, whole, in order."""
        with self._lock:
            rec = Record(seq=self._seq, ts=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                         kind=kind, source=source, type=type_, content=content,
                         artifacts=artifacts or [], prev=self._prev, worker=worker)
            data = rec.model_dump(mode="json")
            if worker is None:
                data.pop("worker")
            data["hash"] = record_hash(data)
            line = json.dumps(data, sort_keys=True, default=str) + "\n"
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            self._seq, self._prev = rec.seq + 1, data["hash"]
            return Record.model_validate(data)

    def artifact(self, path: Path) -> ArtifactRef:
        return artifact(self.run_dir, path)

    def head(self) -> tuple[str, int]:
        """(hash of the last record, number of records): what an anchor pins."""
        return self._prev, self._seq


def split_torn_tail(raw: bytes) -> tuple[bytes, bytes]:
    """(complete records, torn final line): a last line with no newline that is not valid JSON
    is what a kill mid-write leaves; anything else is part of the body."""
    if not raw or raw.endswith(b"\n"):
        return raw, b""
    cut = raw.rfind(b"\n") + 1
    last = raw[cut:]
    try:
        json.loads(last)
        return raw, b""
    except json.JSONDecodeError:
        return raw[:cut], last


def chain_problem(rec: dict, seq: int, prev: str) -> str | None:
    """Why ``rec`` cannot be record ``seq`` after a record hashed ``prev`` (None: it can)."""
    if not isinstance(rec, dict) or rec.get("seq", seq) != seq:
        return f"record {seq} has seq {rec.get('seq') if isinstance(rec, dict) else '?'}: records missing or reordered"
    if rec.get("prev") != prev:
        return f"record {seq} does not chain to record {seq - 1}"
    if record_hash(rec) != rec.get("hash"):
        return (f"record {seq} ({rec.get('source')}: {rec.get('type')}) was modified: "
                "its hash does not match its content")
    return None


def content_artifacts(content: Any) -> list[ArtifactRef]:
    """Every file reference ({path, sha256}) inside a message's content, in order, once each:
    what a decision rests on (code, predictions, scores, mapping specs, unified data)."""
    found: dict[str, ArtifactRef] = {}

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if isinstance(x.get("path"), str) and isinstance(x.get("sha256"), str) and len(x["sha256"]) == 64:
                found.setdefault(x["path"], ArtifactRef(path=x["path"], sha256=x["sha256"]))
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(content)
    return list(found.values())


def read_records(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    yield {"_invalid": f"line {lineno} is not valid JSON ({exc.msg})", "_line": lineno}


class VerifyResult(BaseModel):
    ok: bool
    n_records: int
    first_bad: int | None = None  # seq (or line number for unparsable lines) of the first bad record
    reason: str = ""
    anchored_at: int | None = None  # the seq of the record whose hash is the anchor


def verify(run_dir: Path, anchor: str | None = None) -> VerifyResult:
    """Check the hash chain of ``run_dir/transcript.jsonl`` and every artifact it references
    (each path against its latest record); with ``anchor``, also that the chain holds a record
    with that hash (the head written into verdict.json and report.md)."""
    run_dir = Path(run_dir)
    path = run_dir / "transcript.jsonl"
    if not path.exists():
        return VerifyResult(ok=False, n_records=0, reason=f"{path} does not exist")
    prev, n = GENESIS, 0
    latest: dict[str, tuple[int, str]] = {}
    anchored = None
    for i, rec in enumerate(read_records(path)):
        if "_invalid" in rec:
            return VerifyResult(ok=False, n_records=n, first_bad=i, reason=rec["_invalid"])
        problem = chain_problem(rec, i, prev)
        if problem:
            return VerifyResult(ok=False, n_records=n, first_bad=i, reason=problem)
        for art in rec.get("artifacts", []):
            latest[art["path"]] = (i, art["sha256"])
        if anchor is not None and rec["hash"] == anchor:
            anchored = i
        prev, n = rec["hash"], n + 1
    for rel, (seq, sha) in sorted(latest.items(), key=lambda kv: kv[1][0]):
        file = run_dir / rel
        if not file.exists():
            return VerifyResult(ok=False, n_records=n, first_bad=seq,
                                reason=f"record {seq}: artifact {rel} is missing")
        if sha256_file(file) != sha:
            return VerifyResult(ok=False, n_records=n, first_bad=seq,
                                reason=f"record {seq}: artifact {rel} changed since it was recorded")
    if anchor is not None and anchored is None:
        return VerifyResult(ok=False, n_records=n, first_bad=None,
                            reason=f"no record has the anchor hash {anchor[:16]}...: the transcript is not "
                                   "the one the report was written from (rewritten, or another run)")
    return VerifyResult(ok=True, n_records=n, anchored_at=anchored)
