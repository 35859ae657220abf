"""What every agent of one run shares: the run folder, its transcript, config and backend.

The run's core never imports the terminal: whoever starts a run (the CLI, a test, a bench) hands
in what shows it -- a sink for every transcript record and a progress factory for a node in
training. Left out, the run is silent.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from harmonycell.agents.policies.llm import LLMConfig, session_for_run
from harmonycell.sandbox.executors import LocalExecutor
from harmonycell.tools.record.runfolder import RunConfig, RunFolder
from harmonycell.tools.record.transcript import ArtifactRef, Transcript, content_artifacts
from harmonycell.tools.search.tree import Tree


@dataclass
class RunContext:
    run: RunFolder
    config: RunConfig
    transcript: Transcript
    backend: Any  # a sandbox backend (harmonycell.sandbox)
    llm: LLMConfig | None = None  # the LLM policy's endpoint; None: builtin policies
    llm_session: Any = None  # LLMSession: client, token ledger and budget shared by the agents
    console: Console = field(default_factory=Console)
    failure: BaseException | None = None
    cancel: threading.Event = field(default_factory=threading.Event)  # set on Ctrl-C: kill the job
    cache: dict[str, Any] = field(default_factory=dict)  # e.g. the loaded unified AnnData
    executor: Any = None  # where nodes train (harmonycell.sandbox.executors); None: locally, one at a time
    node_workers: dict[str, int] = field(default_factory=dict)  # node id -> the worker training it
    # what shows the run: each transcript record as it is written (the CLI renders it)
    sink: Callable[[dict], None] = lambda rec: None
    # (node folder, label, epochs) -> a context manager live while one node trains (the CLI's bar)
    progress: Callable[[Path, str, int], AbstractContextManager] = lambda node_dir, label, epochs: nullcontext()
    tree: Tree | None = None  # the search tree, read from tree.json once (see search_tree)

    def get_executor(self):
        if self.executor is None:
            self.executor = LocalExecutor(self.backend)
        return self.executor

    def search_tree(self) -> Tree:
        """The run's search tree: read from tree.json once (a resumed run's too), then this one
        copy, which only the Planner's thread changes and saves."""
        if self.tree is None:
            self.tree = Tree.load(self.run.tree_json)
        return self.tree

    def worker_label(self, node_id: str | None) -> str | None:
        """w0, w1, ... for a node of a parallel search; None when nodes run one at a time."""
        if node_id is None or node_id not in self.node_workers:
            return None
        return f"w{self.node_workers[node_id]}"

    def llm_policy(self, name: str):
        """The run's LLM session when policy ``name`` may use it now (configured, budget left)."""
        if self.llm_session is None and self.llm is not None:
            self.llm_session = session_for_run(self.llm, self.transcript)
        s = self.llm_session
        return s if s is not None and s.available(name) else None

    def artifact(self, path) -> ArtifactRef:
        return self.transcript.artifact(path)

    def rel(self, path) -> str:
        return str(path.relative_to(self.run.root))

    def say(self, source: str, content) -> None:
        """Record an agent message (typed content) and show it; every file the content refers to
        is recorded with its sha256, so `replay --verify` catches a swapped one."""
        data = content.model_dump(mode="json")
        rec = self.transcript.append("message", source, type(content).__name__, data,
                                     content_artifacts(data), worker=self.worker_label(data.get("node_id")))
        self.sink(rec.model_dump(mode="json"))

    def tool_call(self, source: str, tool: str, args: dict, result: Any = None,
                  artifacts: list[ArtifactRef] | None = None) -> None:
        rec = self.transcript.append("tool_call", source, tool, {"args": args, "result": result}, artifacts,
                                     worker=self.worker_label(args.get("node")))
        self.sink(rec.model_dump(mode="json"))
