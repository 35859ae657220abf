"""Compare a re-executed run's transcript with the recorded one: every decision and every
host-computed metric, in order, down to the first divergence.

What is compared: every message (audit reports, mapping specs and unified data by sha256 (JSON
files by content, with the run folder's own path masked), node
plans, node statuses and code, scores, the search's end, the test scores and baselines, the
verdict's checks) and every tool call's arguments and results (the host's metrics among them).
What is not: timestamps, wall-clock and CPU times and what is derived from them (the search reward's
time term, a report naming its own run id and transcript head), ``event`` records (warnings,
resumes) and ``llm_call`` records (served back, not re-decided). Floats are equal within
``FLOAT_TOL`` (relative and absolute): CPU training is seeded and deterministic, and on one
machine reproduces bit for bit; the tolerance covers the last bits of a BLAS on other hardware.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import BaseModel

FLOAT_TOL = 1e-6
# Fields that hold a time, or a value computed from one, or the run's own identity.
# Where a node ran (a Ray node id, a host) and what the executor added to its time are volatile too.
VOLATILE = frozenset({"ts", "wall_s", "cpu_s", "seconds", "train_seconds", "total_seconds", "reward",
                      "transcript_head", "report", "run_id", "created", "updated", "overhead_s",
                      "where", "host"})
COMPARED_KINDS = ("message", "tool_call")
# Files that name their own run (id, folder, transcript head): present on both sides, not compared.
VOLATILE_FILES = frozenset({"report.md", "report.html"})
Digest = Callable[[str, str], str]  # (artifact path, recorded sha256) -> what is compared


def same_sha(path: str, sha: str) -> str:
    return sha


def run_digest(run_root: Path) -> Digest:
    """Artifacts are compared by sha256, except JSON files, which may name their own run folder
    (a scores file names the predictions it scored): those by their content with the run
    folder's absolute path written as ``<run>``."""
    root = str(Path(run_root).resolve())

    def digest(path: str, sha: str) -> str:
        if not path.endswith(".json"):
            return sha
        try:
            text = (Path(root) / path).read_text()
        except OSError:
            return sha
        data = json.loads(text.replace(root, "<run>")) if text.strip() else None
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    return digest


class Divergence(BaseModel):
    index: int  # position among the compared records
    recorded_seq: int | None
    rerun_seq: int | None
    where: str  # "Coder NodeExecuted: content.code.sha256"
    recorded: Any = None
    rerun: Any = None

    def line(self) -> str:
        return (f"first divergence at decision {self.index} (recorded record {self.recorded_seq}, "
                f"rerun record {self.rerun_seq}) {self.where}: recorded {short(self.recorded)}, "
                f"rerun {short(self.rerun)}")


class Comparison(BaseModel):
    n_records: int  # records compared
    n_numbers: int  # floats compared (host metrics, losses, baselines)
    max_abs_diff: float
    divergence: Divergence | None = None

    @property
    def same(self) -> bool:
        return self.divergence is None


def short(x: Any, n: int = 120) -> str:
    s = repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."


# how a resumed run marks the re-issued plan of the node in flight at the stop, after the plan's
# own reason (the Planner writes it; a comparison reads past it)
RESUMED_PLAN = "(resumed: re-running a node interrupted by the last stop)"


def compared(records: Iterable[dict]) -> list[dict]:
    """The records a rerun must reproduce, as one straight run writes them.

    Left out: the person's turns (chat mode, source ``User``: given, not decided; the settings
    they changed are in the recorded configuration the rerun starts from), and, at each
    ``resumed`` event, what a stop and its resume duplicate: the data stages the resumed attempt
    ran again, and the node that was in flight, whose plan the resumed attempt re-issued (its
    first plan stays; its half-done records before the stop go; a plan the stop kept from the
    record is compared without its resumed mark)."""
    out: list[dict] = []
    redo: list[dict] | None = None  # the resumed attempt's records, before its first Planner message
    for r in records:
        if r.get("kind") == "event" and r.get("type") == "resumed":
            redo = []
            continue
        if r.get("kind") not in COMPARED_KINDS or r.get("source") == "User":
            continue
        if redo is not None and r.get("source") != "Planner":
            redo.append(r)
            continue
        if redo is not None:
            seen = {(x["kind"], x["source"], x["type"]) for x in out}
            out += [x for x in redo if (x["kind"], x["source"], x["type"]) not in seen]
            redo = None
            node = (r.get("content") or {}).get("node_id") if r.get("type") == "NodePlan" else None
            first = next((i for i, x in enumerate(out) if x["type"] == "NodePlan"
                          and x["content"].get("node_id") == node), None) if node else None
            if first is not None:  # the node in flight at the stop: its first plan, then this attempt's run
                del out[first + 1:]
                continue
            if node:  # the stop came before its plan reached the record: the plan as first given
                reason = r["content"].get("reason", "")
                r = {**r, "content": {**r["content"], "reason": reason.removesuffix(RESUMED_PLAN).rstrip()}}
        out.append(r)
    return out + (redo or [])


def _is_artifact(x: Any) -> bool:
    return isinstance(x, dict) and isinstance(x.get("path"), str) and isinstance(x.get("sha256"), str)


def _walk(a: Any, b: Any, path: str, stats: dict) -> tuple[str, Any, Any] | None:
    """The first place where ``a`` and ``b`` differ (None: they agree)."""
    if _is_artifact(a) and _is_artifact(b):
        if a["path"] != b["path"]:
            return f"{path}.path", a["path"], b["path"]
        if Path(a["path"]).name in VOLATILE_FILES:
            return None
        da, db = stats["digest_a"](a["path"], a["sha256"]), stats["digest_b"](b["path"], b["sha256"])
        return None if da == db else (f"{path}.sha256 ({a['path']})", a["sha256"], b["sha256"])
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in VOLATILE:
                continue
            if k not in a or k not in b:
                return f"{path}.{k}", a.get(k, "<absent>"), b.get(k, "<absent>")
            d = _walk(a[k], b[k], f"{path}.{k}", stats)
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path} (length)", len(a), len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            d = _walk(x, y, f"{path}[{i}]", stats)
            if d:
                return d
        return None
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            stats["n"] += 1
            if math.isnan(a) and math.isnan(b):
                return None
            diff = abs(a - b)
            stats["max"] = max(stats["max"], diff)
            if diff <= FLOAT_TOL * max(1.0, abs(a), abs(b)):
                return None
        return path, a, b
    return None if a == b else (path, a, b)


def compare(recorded: Iterable[dict], rerun: Iterable[dict], digest_recorded: Digest = same_sha,
            digest_rerun: Digest = same_sha) -> Comparison:
    a, b = compared(recorded), compared(rerun)
    stats = {"n": 0, "max": 0.0, "digest_a": digest_recorded, "digest_b": digest_rerun}
    for i in range(max(len(a), len(b))):
        ra = a[i] if i < len(a) else None
        rb = b[i] if i < len(b) else None
        if ra is None or rb is None:
            have = ra or rb
            div = Divergence(index=i, recorded_seq=ra and ra["seq"], rerun_seq=rb and rb["seq"],
                             where=f"{have['source']} {have['type']}: present only in the "
                                   f"{'recorded run' if rb is None else 'rerun'}")
            return Comparison(n_records=i, n_numbers=stats["n"], max_abs_diff=stats["max"], divergence=div)
        d = None
        for key in ("kind", "source", "type"):
            if ra[key] != rb[key]:
                d = (key, ra[key], rb[key])
                break
        d = d or _walk(ra.get("content"), rb.get("content"), "content", stats)
        d = d or _walk(ra.get("artifacts", []), rb.get("artifacts", []), "artifacts", stats)
        if d:
            where, x, y = d
            div = Divergence(index=i, recorded_seq=ra["seq"], rerun_seq=rb["seq"],
                             where=f"{ra['source']} {ra['type']}: {where}", recorded=x, rerun=y)
            return Comparison(n_records=i, n_numbers=stats["n"], max_abs_diff=stats["max"], divergence=div)
    return Comparison(n_records=len(a), n_numbers=stats["n"], max_abs_diff=stats["max"])
