"""Everything a report shows, read from a run folder alone (no agents, no sandbox, no data files).

Fields other parts of HarmonyCell add over time (verdict ``useful``/``comparisons``/``headline``,
``transcript_head``, LLM usage, knowledge-base and refinement records) are kept as the raw JSON
they were written as, so a renderer shows them when present and leaves them out when absent.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from harmonycell.tools.errors import InputError
from harmonycell.tools.record.transcript import read_records
from harmonycell.tools.search.tree import Tree

LOG_FILES = ("stdout.log", "stderr.log")
LOG_TAIL_CHARS = 6000  # a page people open, not an archive: the end of a log is what explains it


class NodeFiles(BaseModel):
    """What a node's folder holds, as text and parsed JSON."""

    code: str | None = None
    config: dict | None = None
    train_log: list[dict] = Field(default_factory=list)
    logs: dict[str, str] = Field(default_factory=dict)  # file name -> its tail
    status: dict | None = None


class RunData(BaseModel):
    root: str
    run_id: str
    task: dict = Field(default_factory=dict)  # task.yaml
    status: dict | None = None
    verdict: dict | None = None
    tree: dict = Field(default_factory=dict)  # tree.json: {"nodes": {...}, "t_root": ...}
    transcript: list[dict] = Field(default_factory=list)
    unify_report: dict | None = None
    mappings: dict[str, dict] = Field(default_factory=dict)  # dataset id -> mapping spec
    baselines: dict | None = None
    test_scores: dict | None = None  # the selected node's test_scores.json
    nodes: dict[str, NodeFiles] = Field(default_factory=dict)

    # derived views used by the page, the runs table and the MLflow export
    def messages(self, type_: str) -> list[dict]:
        return [r for r in self.transcript if r.get("kind") == "message" and r.get("type") == type_]

    def last_content(self, type_: str) -> dict | None:
        found = self.messages(type_)
        return found[-1].get("content") if found else None

    @property
    def best_node(self) -> str | None:
        test = self.last_content("TestScored")
        if test and test.get("node_id"):
            return test["node_id"]
        done = self.last_content("SearchDone")
        return done.get("best_node") if done else None

    def search_tree(self) -> Tree | None:
        """tree.json as the search's ``Tree`` (None where the run has none, or one this version
        cannot read)."""
        if not self.tree.get("nodes"):
            return None
        try:
            return Tree.model_validate(self.tree)
        except ValidationError:
            return None

    @property
    def selected(self) -> list[str]:
        """The nodes behind the pick: the node itself, or the ensemble's members."""
        tree = self.search_tree()
        if tree is None:
            return [self.best_node] if self.best_node else []
        return [n.id for n in tree.picked_nodes(self.best_node)]

    @property
    def selected_path(self) -> str | None:
        """The pick in words: its action path, or "an ensemble of n003, n005 (weights ...)"."""
        tree = self.search_tree()
        if tree is None:
            return self.tree.get("nodes", {}).get(self.best_node or "", {}).get("action")
        return tree.describe(self.best_node)

    @property
    def chain_head(self) -> dict | None:
        """The transcript's last hash and record count, as the file holds them now."""
        recs = [r for r in self.transcript if "hash" in r]
        return {"hash": recs[-1]["hash"], "records": len(recs)} if recs else None

    @property
    def wall_s(self) -> float | None:
        stamps = [_ts(r.get("ts")) for r in self.transcript]
        stamps = [s for s in stamps if s is not None]
        return (max(stamps) - min(stamps)).total_seconds() if len(stamps) > 1 else None

    def llm_calls(self) -> list[dict]:
        return [r for r in self.transcript if r.get("kind") == "llm_call"]

    def llm_tokens(self) -> int | None:
        """Total LLM tokens: status.json's totals when the run wrote them, else summed calls."""
        totals = (self.status or {}).get("llm") or {}
        if isinstance(totals, dict):
            for key in ("total_tokens", "tokens"):
                if isinstance(totals.get(key), (int, float)):
                    return int(totals[key])
            parts = [totals.get(k) for k in ("prompt_tokens", "completion_tokens")]
            if all(isinstance(p, (int, float)) for p in parts):
                return int(sum(parts))
        found = [usage_tokens(r.get("content")) for r in self.llm_calls()]
        found = [f for f in found if f is not None]
        return sum(found) if found else None


def usage_tokens(content: Any) -> int | None:
    """Tokens of one LLM call record, wherever its writer put the usage."""
    if not isinstance(content, dict):
        return None
    usage = content.get("usage") if isinstance(content.get("usage"), dict) else content
    if isinstance(usage.get("total_tokens"), (int, float)):
        return int(usage["total_tokens"])
    parts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens")]
    if any(isinstance(p, (int, float)) for p in parts):
        return int(sum(p for p in parts if isinstance(p, (int, float))))
    return None


def _ts(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", where=str(path),
                         fix="restore the file from the run, or re-run it") from None


def _tail(path: Path) -> str:
    text = path.read_text(errors="replace")
    return text if len(text) <= LOG_TAIL_CHARS else "...\n" + text[-LOG_TAIL_CHARS:]


def load_node(node_dir: Path) -> NodeFiles:
    log = node_dir / "train_log.jsonl"
    curve = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    code = node_dir / "model.py"
    return NodeFiles(code=code.read_text() if code.exists() else None, config=_json(node_dir / "config.json"),
                     train_log=curve, status=_json(node_dir / "status.json"),
                     logs={n: _tail(node_dir / n) for n in LOG_FILES if (node_dir / n).exists()})


def load_run(root: Path) -> RunData:
    """Read a run folder; a folder without task.yaml is not a run (one clear error)."""
    root = Path(root)
    if not (root / "task.yaml").exists():
        raise InputError("no task.yaml here: not a HarmonyCell run folder", where=str(root),
                         fix="pass a run folder, e.g. runs/<run-id>")
    task = yaml.safe_load((root / "task.yaml").read_text()) or {}
    transcript = ([r for r in read_records(root / "transcript.jsonl") if "_invalid" not in r]
                  if (root / "transcript.jsonl").exists() else [])
    tree = _json(root / "tree.json") or {"nodes": {}}
    nodes_dir = root / "nodes"
    nodes = {p.name: load_node(p) for p in sorted(nodes_dir.iterdir()) if p.is_dir()} if nodes_dir.is_dir() else {}
    mapping_dir = root / "unify" / "mapping"
    mappings = ({p.stem: _json(p) for p in sorted(mapping_dir.glob("*.json"))} if mapping_dir.is_dir() else {})
    data = RunData(root=str(root.resolve()), run_id=str(task.get("run_id") or root.name), task=task,
                   status=_json(root / "status.json"), verdict=_json(root / "verdict.json"), tree=tree,
                   transcript=transcript, unify_report=_json(root / "unify" / "unify_report.json"),
                   mappings=mappings, baselines=_json(root / "baselines.json"), nodes=nodes)
    if data.best_node:
        data.test_scores = _json(nodes_dir / data.best_node / "test_scores.json")
    return data


def find_runs(root: Path) -> list[Path]:
    """Run folders directly under ``root`` (or ``root`` itself when it is one), oldest first."""
    root = Path(root)
    if (root / "task.yaml").exists():
        return [root]
    if not root.is_dir():
        raise InputError("no such folder", where=str(root), fix="pass a runs root, e.g. runs/")
    return sorted((p for p in root.iterdir() if (p / "task.yaml").exists()), key=lambda p: p.name)
