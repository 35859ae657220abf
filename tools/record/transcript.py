"""The run transcript: an append-only, hash-chained JSON-lines log of everything that happened.

Each record carries the sha256 of the previous record (``prev``) and its own hash (``hash``,
computed over the record without that field), so editing, inserting, deleting or reordering any
record breaks the chain at a record ``verify`` can name. Artifacts are referenced by path
(relative to the run folder) and sha256, so a changed file is caught too.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, Field

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
        if self.path.exists():
            self._recover()

    def _recover(self) -> None:
        """Continue after the last complete record; drop a torn last line left by a kill."""
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        good = b""
        for line in lines:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            good += line + b"\n"
            self._seq, self._prev = rec["seq"] + 1, rec["hash"]
        if good != raw:
            from harmonycell.tools.record.atomic import write_bytes

            write_bytes(self.path, good)

    def append(self, kind: Kind, source: str, type_: str, content: Any = None,
               artifacts: list[ArtifactRef] | None = None) -> Record:
        rec = Record(seq=self._seq, ts=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                     kind=kind, source=source, type=type_, content=content,
                     artifacts=artifacts or [], prev=self._prev)
        data = rec.model_dump(mode="json")
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


def verify(run_dir: Path) -> VerifyResult:
    """Check the hash chain of ``run_dir/transcript.jsonl`` and every artifact it references."""
    run_dir = Path(run_dir)
    path = run_dir / "transcript.jsonl"
    if not path.exists():
        return VerifyResult(ok=False, n_records=0, reason=f"{path} does not exist")
    prev, n = GENESIS, 0
    for i, rec in enumerate(read_records(path)):
        if "_invalid" in rec:
            return VerifyResult(ok=False, n_records=n, first_bad=i, reason=rec["_invalid"])
        seq = rec.get("seq", i)
        if seq != i:
            return VerifyResult(ok=False, n_records=n, first_bad=i,
                                reason=f"record {i} has seq {seq}: records missing or reordered")
        if rec.get("prev") != prev:
            return VerifyResult(ok=False, n_records=n, first_bad=seq,
                                reason=f"record {seq} does not chain to record {seq - 1}")
        if record_hash(rec) != rec.get("hash"):
            return VerifyResult(ok=False, n_records=n, first_bad=seq,
                                reason=f"record {seq} ({rec.get('source')}: {rec.get('type')}) was modified: its hash does not match its content")
        for art in rec.get("artifacts", []):
            file = run_dir / art["path"]
            if not file.exists():
                return VerifyResult(ok=False, n_records=n, first_bad=seq,
                                    reason=f"record {seq}: artifact {art['path']} is missing")
            if sha256_file(file) != art["sha256"]:
                return VerifyResult(ok=False, n_records=n, first_bad=seq,
                                    reason=f"record {seq}: artifact {art['path']} changed since it was recorded")
        prev, n = rec["hash"], n + 1
    return VerifyResult(ok=True, n_records=n)
