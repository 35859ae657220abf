"""The run folder: layout, resolved configuration (task.yaml) and run status."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import h5py
import yaml
from pydantic import BaseModel, Field, field_validator

from harmonycell.tools.record import atomic
from harmonycell.tools.errors import InputError
from harmonycell.tools.tasks.registry import task_kind

State = Literal["running", "failed", "complete"]


class InputFile(BaseModel):
    path: str
    sha256: str
    bytes: int


class RunConfig(BaseModel):
    """Everything that determines a run; written to task.yaml before anything else happens."""

    run_id: str
    task: str  # a registered task kind's name
    inputs: list[InputFile]
    seed: int = 0
    budget_nodes: int = Field(2, ge=1, description="training nodes the search may run")
    time_limit_s: float | None = Field(None, gt=0, description="wall-clock limit of the search")
    use_kb: bool = True  # read and write the knowledge base (SPEC 6)
    kb_path: str | None = None  # None: the user's data directory
    node_timeout_s: float = 900.0
    backend: str = "auto"  # sandbox backend: auto | docker | bwrap | unsafe-local
    workers: int | None = Field(None, ge=1, description="nodes trained at once (None: 1 locally, the cluster's CPUs on Ray)")
    executor: str = "local"  # where nodes train: local | ray
    ray_address: str | None = None  # an existing Ray cluster; None with executor ray: a local one for the run
    llm: dict | None = None  # LLM endpoint settings (base_url, model, api_key_env, ...); None: builtin
    epochs: int = 100
    fold: list[int] | None = None  # [k, K]: test units are fold k of K (cross-validation)
    specs_dir: str | None = None  # --specs: a folder of <dataset>.json mapping specs (user-written)
    gene_sets: str | None = None  # GMT/JSON gene sets the pathway-masked backbone is built from (None: co-expression)
    # replay --rerun: the recorded knowledge-base retrieval ({"kb": summary, "priors": {...}}),
    # served back instead of reading the knowledge base; a rerun stores nothing in it either
    kb_replay: dict | None = None
    # said by the person (chat) or on the command line; honoured by the Unifier's split and the Planner
    hold_out: list[str] = Field(default_factory=list, description="cell types / contexts the test holds out")
    exclude: list[str] = Field(default_factory=list, description="paradigms or backbones not to try")
    created: str = ""

    @field_validator("task")
    @classmethod
    def _registered(cls, name: str) -> str:
        return task_kind(name).name  # an unknown name: the registry's InputError, with the names it knows


class RunStatus(BaseModel):
    state: State
    error: str | None = None
    updated: str
    llm: dict | None = None  # LLM calls, tokens, cost and latency of the run (None: no LLM)


class RunFolder:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()  # artifact paths are recorded relative to it

    # layout
    task_yaml = property(lambda self: self.root / "task.yaml")
    transcript = property(lambda self: self.root / "transcript.jsonl")
    status_json = property(lambda self: self.root / "status.json")
    audit_dir = property(lambda self: self.root / "audit")
    unify_dir = property(lambda self: self.root / "unify")
    data_dir = property(lambda self: self.root / "data")
    sandbox_data = property(lambda self: self.root / "data" / "sandbox")
    unified = property(lambda self: self.root / "unify" / "unified.h5ad")
    nodes_dir = property(lambda self: self.root / "nodes")
    tree_json = property(lambda self: self.root / "tree.json")
    report_md = property(lambda self: self.root / "report.md")

    def node_dir(self, node_id: str) -> Path:
        return self.nodes_dir / node_id

    def config(self) -> RunConfig:
        return RunConfig.model_validate(yaml.safe_load(self.task_yaml.read_text()))

    def save_config(self, cfg: RunConfig) -> None:
        """task.yaml, written whole (atomically): at creation, and when the person steers the run,
        so that `resume` and `replay --rerun` start from what is in force."""
        atomic.write_text(self.task_yaml, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    def status(self) -> RunStatus | None:
        if not self.status_json.exists():
            return None
        return RunStatus.model_validate_json(self.status_json.read_text())

    def set_status(self, state: State, error: str | None = None, llm: dict | None = None) -> None:
        st = RunStatus(state=state, error=error, updated=_now(), llm=llm)
        atomic.write_text(self.status_json, st.model_dump_json(indent=2))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def check_h5ad(path: Path) -> InputFile:
    """Fail early, with a message a user can act on, for inputs that cannot be .h5ad files."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", where=str(p), fix="check the path")
    if not p.is_file():
        raise InputError("not a file", where=str(p), fix="pass .h5ad files, not folders")
    try:
        ok = h5py.is_hdf5(p)
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", where=str(p),
                         fix="check the file's permissions") from None
    if not ok:
        raise InputError("not an HDF5/.h5ad file", where=str(p),
                         fix="pass AnnData files written with `adata.write_h5ad` (convert CSV/loom/RDS first)")
    return InputFile(path=str(p.resolve()), sha256=atomic.sha256_file(p), bytes=p.stat().st_size)


def create_run(out_root: Path, inputs: list[Path], task: str, **options) -> RunFolder:
    """Validate inputs and options, then create ``out_root/<run-id>/`` with task.yaml.

    Everything that can be checked before the run is checked here, so a bad input leaves no
    run folder behind.
    """
    task_kind(task)  # an unknown kind is refused before the inputs are read
    if not inputs:
        raise InputError("no input files given", fix="pass one or more .h5ad files")
    files = [check_h5ad(Path(p)) for p in inputs]
    run_id = options.pop("run_id", None) or new_run_id()
    return _new_folder(out_root, RunConfig(run_id=run_id, task=task, inputs=files, created=_now(), **options))


def create_run_from(out_root: Path, cfg: RunConfig, **changes) -> RunFolder:
    """A new run folder with a recorded configuration and only ``changes`` changed (replay --rerun):
    every other field, a new one included, carries over; the inputs are checked again."""
    data = {**cfg.model_dump(), **changes, "created": _now(),
            "inputs": [check_h5ad(Path(f.path)).model_dump() for f in cfg.inputs]}
    return _new_folder(out_root, RunConfig.model_validate(data))


def _new_folder(out_root: Path, cfg: RunConfig) -> RunFolder:
    run = RunFolder(Path(out_root) / cfg.run_id)
    run.root.mkdir(parents=True, exist_ok=False)
    run.save_config(cfg)
    run.set_status("running")
    return run
