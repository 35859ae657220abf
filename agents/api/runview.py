"""Runs from Python: start one, open a finished one, score one's own predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from harmonycell.prediction import open_run, predict, selected_node
from harmonycell.tools.errors import InputError
from harmonycell.tools.evaluation.verdict import MeritVerdict, judge_file
from harmonycell.tools.record import atomic
from harmonycell.tools.record.runfolder import RunConfig, RunFolder
from harmonycell.tools.search.tree import Tree
from harmonycell.tools.data.taskdata import queries_for
from harmonycell.tools.schema import SPLIT
from harmonycell.tools.tasks.registry import DEFAULT_KIND


@dataclass
class Run:
    """A finished run folder, read: its verdict, comparisons and search tree, and its model."""

    path: Path

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @property
    def config(self) -> RunConfig:
        return self.folder.config()

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def verdict(self) -> dict:
        """verdict.json: ``valid``, ``useful``, ``headline``, ``checks``, ``comparisons``, ..."""
        return json.loads((self.path / "verdict.json").read_text())

    @property
    def comparisons(self) -> pd.DataFrame:
        """The selected model against each baseline, one row per (baseline, metric), on the test split."""
        return pd.DataFrame(self.verdict["comparisons"])

    @property
    def search_tree(self) -> Tree:
        """The search tree as the run saved it (pydantic)."""
        return Tree.load(self.folder.tree_json)

    @property
    def tree(self) -> pd.DataFrame:
        """One row per trained or failed node: its action path, status, validation metric, cost."""
        rows = []
        for n in self.search_tree.nodes.values():
            if n.id == "root" or n.status == "decision":
                continue
            rows.append({"node": n.id, "parent": n.parent, "action": n.action, "status": n.status,
                         "val_metric": n.val_metric, "reward": n.reward, "wall_s": n.wall_s,
                         "cpu_s": n.cpu_s, "attempts": n.attempts, **{f"val_{k}": v for k, v in n.metrics.items()}})
        return pd.DataFrame(rows).set_index("node") if rows else pd.DataFrame()

    @property
    def selected(self) -> str:
        """The node the search selected (the model ``predict`` answers with)."""
        return selected_node(self.folder)

    @property
    def report(self) -> Path:
        return self.folder.report_md

    def predict(self, perturbations: Sequence[str] | str, contexts: Sequence[str] | str | None = None,
                refit: bool = True, members: int | None = None, cells: int | None = None,
                cells_seed: int = 0) -> AnnData:
        """``hc.predict`` with this run: the means (``layers['spread']`` over ``members`` bootstrap
        refits), or with ``cells=N`` N cells per (perturbation, context)."""
        return predict(self.path, perturbations, contexts, refit=refit, members=members, cells=cells,
                       cells_seed=cells_seed)

    def __repr__(self) -> str:
        v = self.verdict
        return f"Run({self.run_id}: {v.get('headline', '')})"


def audit(data: str | os.PathLike | AnnData):
    """The DataAuditor's profile of one .h5ad file or AnnData (what ``harmonycell audit`` prints):
    a pydantic ``AuditReport``; ``.to_markdown()`` for reading."""
    from harmonycell.tools.data.audit import audit_h5ad

    if isinstance(data, AnnData):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{data.uns.get('dataset_name', 'adata')}.h5ad"
            data.write_h5ad(path)
            return audit_h5ad(path)
    return audit_h5ad(Path(data))


def load_run(path: str | os.PathLike) -> Run:
    """A finished run folder (``runs/<run-id>``)."""
    return Run(open_run(Path(path)).root)


def run(data: str | os.PathLike | AnnData | Sequence[str | os.PathLike | AnnData], task: str = DEFAULT_KIND,
        out: str | os.PathLike = "runs", *, budget: int = 32, time_limit: str | None = None, epochs: int = 100,
        seed: int = 0, backend: str = "auto", no_kb: bool = False, quiet: bool = False,
        extra_args: Sequence[str] = ()) -> Run:
    """Run the whole pipeline (audit, unify, search, evaluate, judge) on .h5ad paths or in-memory
    AnnData objects and return the finished run.

    It runs exactly ``harmonycell run`` (the same code, in a child process, so that a notebook
    kernel keeps its own state and a Ctrl-C stops the sandbox too). An in-memory AnnData is first
    written to ``<out>/inputs/<name>-<sha256 prefix>.h5ad`` and kept there: the run records its
    inputs by path and sha256, and ``resume`` and ``replay --rerun`` read them again."""
    out = Path(out)
    items = data if isinstance(data, (list, tuple)) else [data]
    paths = [_as_path(x, i, out) for i, x in enumerate(items)]
    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    args = [sys.executable, "-m", "harmonycell.agents.cli", "run", *map(str, paths), "--task", task,
            "--out", str(out), "--budget", str(budget), "--epochs", str(epochs), "--seed", str(seed),
            "--backend", backend, *(["--time-limit", time_limit] if time_limit else []),
            *(["--no-kb"] if no_kb else []), *extra_args]
    proc = subprocess.run(args, capture_output=True, text=True)
    if not quiet or proc.returncode != 0:
        print(proc.stdout[-20000:], end="")
        print(proc.stderr[-5000:], end="", file=sys.stderr)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise InputError(f"the run failed (exit {proc.returncode}): {last[0]}", where=str(out),
                         fix="read the messages above; the run folder says where it stopped")
    made = [p for p in out.iterdir() if p.name not in before and (p / "verdict.json").exists()]
    if len(made) != 1:
        raise InputError(f"expected one new finished run in {out}, found {len(made)}", where=str(out))
    return load_run(made[0])


def _as_path(x, i: int, out: Path) -> Path:
    if isinstance(x, AnnData):
        folder = out / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            tmp_path = Path(tmp) / "adata.h5ad"
            x.write_h5ad(tmp_path)
            sha = atomic.sha256_file(tmp_path)
            name = str(x.uns.get("dataset_name", f"adata{i}"))
            dest = folder / f"{name}-{sha[:12]}.h5ad"
            if not dest.exists():
                os.replace(tmp_path, dest)
        return dest
    p = Path(x)
    if not p.exists():
        raise InputError("file not found", where=str(p), fix="pass .h5ad paths or AnnData objects")
    return p


def _task_adata(task) -> AnnData:
    """The unified AnnData of a run folder, a task folder, a unified .h5ad, or itself."""
    import anndata

    if isinstance(task, Run):
        task = task.path
    if isinstance(task, AnnData):
        adata = task
    else:
        p = Path(task)
        for candidate in (p / "unify" / "unified.h5ad", p / "unified.h5ad", p):
            if candidate.is_file():
                adata = anndata.read_h5ad(candidate)
                break
        else:
            raise InputError("no unified.h5ad here", where=str(p),
                             fix="pass a run folder, a folder made by `harmonycell unify --task`, or its .h5ad")
    if SPLIT not in adata.obs:
        raise InputError("the data have no obs['split']: they were unified without a task", where=str(task),
                         fix="unify with --task, or pass a run folder")
    return adata


def score(task, predictions, split: str = "test") -> MeritVerdict:
    """Judge predictions of ``split``'s queries as ``harmonycell score --compare`` does.

    ``task``: a run (folder or ``Run``), a unified task folder / .h5ad, or that AnnData.
    ``predictions``: a (queries, genes) array or .npy in the task's query and gene order, or an
    AnnData with one observation per query (``condition_name`` and ``context`` columns, as
    ``predict`` writes them), put into the task's order here."""
    adata = _task_adata(task)
    if isinstance(predictions, AnnData):
        predictions = _rows_in_query_order(predictions, adata, split)
    if isinstance(predictions, np.ndarray):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "predictions.npy"
            np.save(path, predictions)
            return judge_file(adata, path, split)
    return judge_file(adata, Path(predictions), split)


def _rows_in_query_order(pred: AnnData, adata: AnnData, split: str) -> np.ndarray:
    for col in ("condition_name", "context"):
        if col not in pred.obs:
            raise InputError(f"the predictions' obs has no {col!r} column", where="predictions",
                             fix="pass an AnnData from hc.predict, or a (queries, genes) array")
    index = {(c, k): i for i, (c, k) in enumerate(zip(pred.obs["condition_name"].astype(str),
                                                       pred.obs["context"].astype(str)))}
    queries = queries_for(adata, split)
    missing = [f"{q.condition} in {q.context}" for q in queries if (q.condition, q.context) not in index]
    if missing:
        raise InputError(f"no prediction for {len(missing)} of the {split} queries ({', '.join(missing[:3])}...)",
                         where="predictions", fix=f"predict every {split} query")
    genes = list(adata.var_names)
    X = pred[:, genes].X
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    return np.stack([X[index[(q.condition, q.context)]] for q in queries]).astype(np.float32)
