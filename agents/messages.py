"""Typed messages the agents exchange (the content of autogen ``StructuredMessage``s)."""

from __future__ import annotations


from pydantic import BaseModel, Field

from harmonycell.tools.evaluation.compare import Comparison


class Artifact(BaseModel):
    path: str  # relative to the run folder
    sha256: str


class RunRequest(BaseModel):
    """The user's task: which files, which question."""

    inputs: list[str]
    task: str
    seed: int = 0


class AuditDone(BaseModel):
    """DataAuditor: one profile per input."""

    inputs: list[str]
    summaries: list[str]  # one line per input, for people
    reports: list[Artifact]


class UnifyDone(BaseModel):
    """Unifier: the canonical task data is ready."""

    n_cells: int
    n_genes: int
    n_conditions: dict[str, int]  # split -> held-out (or train) perturbations
    dropped_cells: int
    mapping_specs: list[Artifact]
    unified: Artifact
    unit: str = "perturbation"  # what a held-out item is: perturbation, cell context, combination
    held_out: dict[str, list[str]] = Field(default_factory=dict)  # split -> the named held-out units


class Steer(BaseModel):
    """User (chat mode): one change of course said in words, validated, before or between search rounds."""

    said: str  # the person's words
    exclude: list[str] = Field(default_factory=list)  # paradigms or backbones the search must not try
    time_limit_s: float | None = None
    add_nodes: int = 0
    drop_inputs: list[str] = Field(default_factory=list)  # these change the data: a new run
    hold_out: list[str] = Field(default_factory=list)


class Approval(BaseModel):
    """User (chat mode): whether to go on to (more) search, with what budget and changes of course."""

    approved: bool
    budget_nodes: int | None = None
    note: str = ""
    changes: list[Steer] = Field(default_factory=list)  # honoured by the Planner via the run's config


class Question(BaseModel):
    """User (chat mode): a question asked instead of an answer, and what the records say."""

    said: str
    answer: str
    topic: str = ""
    sources: list[str] = Field(default_factory=list)  # run-folder records the answer was read from
    by: str = "builtin"  # builtin | llm


class NodePlan(BaseModel):
    """Planner: train this action path as node ``node_id``."""

    node_id: str
    action: str
    parent: str | None = None
    reason: str = ""


class NodeExecuted(BaseModel):
    """Coder or Debugger: the node's code ran and wrote predictions."""

    node_id: str
    action: str
    wall_s: float
    backend: str
    code: Artifact
    cpu_s: float | None = None  # CPU time of the node's process tree (the reward's cost)
    predictions: dict[str, Artifact]  # split -> predictions file written by the sandbox
    attempts: int = 1


class NodeFailed(BaseModel):
    """Coder: the node's code failed in the sandbox (the Debugger takes over)."""

    node_id: str
    action: str
    status: str
    error_tail: str
    attempts: int = 1


class NodeAbandoned(BaseModel):
    """Debugger: no fix found within its step budget."""

    node_id: str
    action: str
    reason: str
    attempts: int


class NodeScored(BaseModel):
    """Evaluator: host-computed validation metrics and the search reward."""

    node_id: str
    metrics: dict[str, float | None]
    reward: float
    # what the execution said, carried on to the search tree's node
    backend: str | None = None
    attempts: int = 1
    predictions: dict[str, Artifact] = Field(default_factory=dict)  # as the sandbox wrote them


class SearchDone(BaseModel):
    """Planner: budget spent; the pick (the best node, or the ensemble of the best nodes where it
    is strictly better on validation) goes to the final test."""

    best_node: str | None  # a node id, or "ensemble" (tools.search.tree.ENSEMBLE_ID): the tree's ensemble
    n_nodes: int
    reason: str
    ensemble: str = ""  # one line: the ensemble of the best nodes, built (and picked or not) or why not


class SearchReviewed(SearchDone):
    """User (chat mode): the person has seen the search's result and sends it on to the test."""


class TestScored(BaseModel):
    """Evaluator: the best node on the test split, beside the baselines."""

    node_id: str | None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    baselines: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    predictions: Artifact | None = None
    scores: Artifact | None = None
    # model minus each baseline, paired per test query, exact sign-flip test (Holm over the baselines)
    comparisons: list[Comparison] = Field(default_factory=list)
    n_queries: int = 0


class Check(BaseModel):
    name: str
    passed: bool
    detail: str


class TranscriptHead(BaseModel):
    """The transcript's chain head when the Judge wrote the report: pins records 0..records-1."""

    hash: str
    records: int


class Verdict(BaseModel):
    """Judge: two verdicts, never one word. ``valid``: integrity (provenance, split, sandbox
    blindness, code). ``useful``: better than every baseline on the search metric with the
    interval excluding 0. ``headline`` says both and names the held-out unit."""

    valid: bool
    useful: bool = False
    headline: str = ""
    checks: list[Check]
    comparisons: list[Comparison] = Field(default_factory=list)
    report: Artifact | None = None
    backend: str | None = None  # the sandbox backend that ran the selected node
    isolated: bool | None = None  # False: the selected node ran with no wall (unsafe-local)
    transcript_head: TranscriptHead | None = None


CONTENT_TYPES: tuple[type[BaseModel], ...] = (
    RunRequest, AuditDone, UnifyDone, Steer, Approval, Question, NodePlan, NodeExecuted, NodeFailed, NodeAbandoned,
    NodeScored, SearchDone, SearchReviewed, TestScored, Verdict,
)
