"""A finished run's selected model answers perturbations nobody measured.

One code path for ``harmonycell predict``, ``hc.predict`` and ``Run.predict``:

1. each requested perturbation (``A`` or ``A+B``) is resolved against the run's data (its
   perturbations, then its measured genes) and then against gene knowledge (aliases and Ensembl
   ids to the current symbol, said in the answer); what cannot be answered is refused by name
   (``PredictionRefused``): a gene neither knows, a context the run never saw, a combination the
   task kind never taught the model;
2. the model: by default the selected node's action path refitted in the sandbox on every
   labelled unit (train, validation and test: the verdict has been given), once, with every
   measured gene of a CRISPR task as an input (a gene outside a kept fit's inputs refits again,
   with every earlier input too), kept in ``runs/<id>/predict/`` with sha256s on the transcript; with
   ``refit=False`` the node as trained (its own held-out predictions where asked for, else the
   node re-executed, accepted only if it reproduces its recorded test predictions bit for bit);
3. the spread (``uncertainty``): with a refit, ``members`` bootstrap refits of the same action
   path, each on a resample of the labelled perturbation units (seeded, every control kept),
   kept inside the refit's folder and reused like it; none with ``refit=False`` or ``members=1``;
4. the answer: AnnData, one observation per (perturbation, context), the predicted mean
   expression over the run's genes (the refit on every unit, never the members' mean),
   ``layers['delta']`` (prediction minus the context's control mean), ``layers['spread']`` (the
   members' per-gene standard deviation), canonical ``obs`` plus ``predicted=True``, and
   ``uns['harmonycell']`` naming the run, the model, its verdict and what the spread is. With
   ``cells=N``, N cells per (perturbation, context) as a second AnnData (``cells``): sampled from
   a generative model, else control cells shifted by the predicted delta. Every call, refusals
   included, and every fit is a transcript record.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from harmonycell.cells import SAMPLED, SHIFTED, cells_anndata, check_cells, draw_controls, generative, shifted
from harmonycell.sandbox.backends import get_backend
from harmonycell.sandbox.result import Job
from harmonycell.sandbox.training import HARNESS, NODE_ENV, run_training
from harmonycell.tools.data.taskdata import dense, export_sandbox_data, load_meta
from harmonycell.tools.errors import InputError
from harmonycell.tools.genes.db import GeneDB, GeneKnowledgeMissing
from harmonycell.tools.record import atomic
from harmonycell.tools.record.runfolder import RunFolder
from harmonycell.tools.record.transcript import Transcript, read_records
from harmonycell.tools.schema import (COMBO_SEP, OBSM_DOSE, OBSM_MASK, SPLIT, UNS_PERTS, VAR_SYMBOL,
                                      canonical_condition, context_labels)
from harmonycell.tools.tasks.registry import task_kind
from harmonycell.tools.search.tree import ENSEMBLE_ID, Tree
from harmonycell.uncertainty import (NO_REFIT, ONE_MEMBER, SPREAD_LAYER, bootstrap_units, check_members,
                                     default_members, facts, member_seeds, none_because, sentence, spread)

SANDBOX_SCRIPT = Path(__file__).with_name("sandbox_predict.py")
PREDICT_DIR = "predict"  # inside the run folder: fits and calls, every file on the transcript
SOURCE = "Predictor"  # the transcript's name for this speaker
NOTICE = "PREDICTED by a model, not measured"


class PredictionRefused(InputError):
    """A perturbation or context the run's model cannot answer, named with the reason."""


@dataclass
class Fit:
    """A fitted model kept with the run: its folder (model.py, config.json, model.pt) and data."""

    name: str
    root: Path
    data_dir: Path
    refit: bool
    reused: bool
    record: dict = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.root / "fit"


@dataclass(frozen=True)
class Query:
    requested: str  # as the person wrote it
    condition: str  # canonical name over the model's perturbation inputs ("A+B")
    context: str
    notes: tuple[str, ...] = ()  # aliases resolved, where the gene's input comes from


# --- the run ------------------------------------------------------------------------------------
def selected_node(run: RunFolder) -> str:
    """The node the search selected (the last SearchDone / SearchReviewed on the record)."""
    best = None
    for rec in read_records(run.transcript):
        if rec.get("kind") == "message" and rec.get("type") in ("SearchDone", "SearchReviewed"):
            best = (rec.get("content") or {}).get("best_node")
    if best is None:
        raise PredictionRefused("the run selected no model (its search ended without a trained node)",
                                where=str(run.root), fix="start a run that trains a node, then predict with it")
    ens = Tree.load(run.tree_json).ensemble if best == ENSEMBLE_ID else None
    if ens is not None:  # prediction refits one node's code; an ensemble has none of its own
        raise PredictionRefused(f"the run's pick is {ens.label()}; predict answers with one node's model, "
                                f"and has no option to choose a member ({', '.join(f'{m}: {a}' for m, a in zip(ens.members, ens.actions))})",
                                where=str(run.root), fix="start a run that searches one of those action paths, "
                                "or read the ensemble's held-out predictions in nodes/ensemble/pred_test.npy")
    return best


def open_run(run_dir: Path) -> RunFolder:
    run = RunFolder(Path(run_dir))
    if not run.task_yaml.exists() or not run.transcript.exists():
        raise InputError("not a run folder (no task.yaml / transcript.jsonl)", where=str(run_dir),
                         fix="pass a run folder, e.g. runs/<run-id>")
    status = run.status()
    if status is None or status.state != "complete" or not (run.root / "verdict.json").exists():
        raise PredictionRefused(f"the run is {status.state if status else 'not started'}, with no verdict",
                                where=str(run.root), fix="finish it first (`harmonycell resume RUN`)")
    return run


def verdict_summary(run: RunFolder) -> dict:
    v = json.loads((run.root / "verdict.json").read_text())
    return {"valid": v.get("valid"), "useful": v.get("useful"), "headline": v.get("headline", "")}


# --- resolving what was asked -------------------------------------------------------------------
@dataclass
class Vocabulary:
    """What a run's data know: its perturbations, its measured genes, its contexts, its kind."""

    perts: list[str]
    measured: dict[str, str]  # upper-case symbol or gene id -> the symbol as the data write it
    contexts: list[str]
    genetic: bool  # the perturbations are genes (CRISPR): gene knowledge may stand in for data
    combos_taught: bool  # the model may be asked a combination
    task: str

    @classmethod
    def of(cls, adata: AnnData, task: str) -> "Vocabulary":
        perts = [str(p) for p in adata.uns[UNS_PERTS]]
        symbols = adata.var[VAR_SYMBOL].astype(str) if VAR_SYMBOL in adata.var else adata.var_names.astype(str)
        measured: dict[str, str] = {}
        for gid, sym in zip(adata.var_names.astype(str), symbols):
            measured.setdefault(sym.upper(), sym)
            measured.setdefault(gid.upper(), sym)
        obs = adata.obs
        perturbed = ~obs["is_control"].astype(bool)
        genetic = bool((obs.loc[perturbed, "pert_type"].astype(str) == "crispr").any())
        combos = any(COMBO_SEP in str(c) for c in obs.loc[perturbed, "condition_name"].astype(str).unique())
        return cls(perts, measured, sorted(context_labels(obs).unique()), genetic,
                   combos or task_kind(task).answers_combinations, task)


def _gene_db() -> GeneDB | None:
    try:
        return GeneDB()
    except GeneKnowledgeMissing:
        return None


def resolve_part(name: str, vocab: Vocabulary, db: GeneDB | None) -> tuple[str, str | None]:
    """(the model input for ``name``, a note saying how it was read), or PredictionRefused."""
    if name in vocab.perts:
        return name, None
    upper = {p.upper(): p for p in vocab.perts}
    if name.upper() in upper:
        return upper[name.upper()], None
    if not vocab.genetic:
        raise PredictionRefused(
            f"{name!r} is not one of this run's perturbations ({', '.join(vocab.perts[:8])}"
            f"{', ...' if len(vocab.perts) > 8 else ''}); they are not genes, so gene knowledge cannot stand in",
            where="--perturbation", fix="ask for a perturbation the run's data contain")
    res = db.resolve_one(name) if db is not None else None
    if res is not None and res.status == "ambiguous":
        raise PredictionRefused(f"{name!r} is an alias of several genes ({', '.join(res.candidates)})",
                                where="--perturbation", fix="write the gene's official symbol")
    symbol = res.symbol if res is not None and res.symbol else None
    note = f"{name} read as {symbol} ({res.status} in gene knowledge)" if symbol and symbol != name else None
    for candidate in filter(None, (symbol, name)):
        if candidate in vocab.perts or candidate.upper() in upper:
            return upper.get(candidate.upper(), candidate), note
    for candidate in filter(None, (symbol, name)):
        if candidate.upper() in vocab.measured:
            return vocab.measured[candidate.upper()], note
    if symbol is None:
        known = "not installed" if db is None else "does not know it either"
        raise PredictionRefused(f"gene {name!r} is unknown: not in the run's data, and gene knowledge {known}",
                                where="--perturbation",
                                fix="check the spelling" + (" or run `make setup` to install gene knowledge"
                                                            if db is None else ""))
    from harmonycell.tools.genes.features import go_embedding

    if symbol not in go_embedding(db):
        raise PredictionRefused(f"gene {symbol!r} is neither measured in the run's data nor annotated in GO: "
                                "the model would have nothing to read about it", where="--perturbation",
                                fix="ask for a measured or GO-annotated gene")
    return symbol, note


def resolve_queries(requested: list[str], contexts: list[str] | None, vocab: Vocabulary,
                    db: GeneDB | None) -> list[Query]:
    if not requested:
        raise InputError("no perturbation asked for", where="--perturbation",
                         fix="add --perturbation GENE (or A+B), or --from FILE with one per line")
    chosen = resolve_contexts(contexts, vocab.contexts)
    out = []
    for item in dict.fromkeys(r.strip() for r in requested if r.strip()):
        parts = [p.strip() for p in item.split(COMBO_SEP) if p.strip()]
        if not parts:
            raise InputError(f"{item!r} names no perturbation", where="--perturbation", fix="write GENE or A+B")
        if len(parts) > 1 and not vocab.combos_taught:
            raise PredictionRefused(
                f"{item!r} is a combination, and this run's task ({vocab.task}) trained on single "
                "perturbations only: its model cannot answer combinations",
                where="--perturbation", fix="ask for single perturbations, or run the unseen-combination task")
        resolved = [resolve_part(p, vocab, db) for p in parts]
        names = [r[0] for r in resolved]
        if len(set(names)) < len(names):
            raise InputError(f"{item!r} names the same gene twice", where="--perturbation", fix="write A+B")
        notes = tuple(n for _, n in resolved if n)
        for ctx in chosen:
            out.append(Query(item, canonical_condition(names), ctx, notes))
    return out


def resolve_contexts(asked: list[str] | None, known: list[str]) -> list[str]:
    """Contexts are ``dataset|cell type``; a bare cell type names every context of that type."""
    if not asked:
        return list(known)
    out = []
    for a in asked:
        hits = [k for k in known if a == k or a.lower() == k.split("|", 1)[-1].lower()]
        if not hits:
            raise PredictionRefused(f"context {a!r} was never seen by this run",
                                    where="--context", fix=f"use one of: {', '.join(known)}")
        out += [h for h in hits if h not in out]
    return out


def read_requests(perturbations: list[str] | None, from_file: Path | None) -> list[str]:
    """--perturbation values and the lines of --from FILE (blank lines and # comments skipped)."""
    items = list(perturbations or [])
    if from_file is not None:
        path = Path(from_file)
        if not path.is_file():
            raise InputError("file not found", where=str(path), fix="pass a text file with one perturbation per line")
        items += [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    return [i for i in items if i]


# --- fitting ------------------------------------------------------------------------------------
def _backend(run: RunFolder):
    cfg = run.config()
    ran_on = next((r["content"]["backend"] for r in read_records(run.transcript)
                   if r.get("type") == "NodeExecuted"), cfg.backend)
    # only builtin template code may run unwalled, as in the run itself
    return get_backend(ran_on, allow_unwalled=cfg.llm is None)


def refit_data(adata: AnnData, universe: list[str]) -> AnnData:
    """The unified data with every labelled unit for training, the perturbation inputs widened to
    ``universe`` (the data's own columns first, unchanged, then the new genes)."""
    perts = [str(p) for p in adata.uns[UNS_PERTS]]
    extra = [g for g in universe if g not in perts]
    out = adata.copy()
    out.obs[SPLIT] = pd.Categorical(["train"] * out.n_obs, categories=["train", "val", "test"])
    pad = sp.csr_matrix((out.n_obs, len(extra)), dtype=np.float32)
    for key in (OBSM_MASK, OBSM_DOSE):
        m = out.obsm[key]
        out.obsm[key] = sp.hstack([sp.csr_matrix(m), pad], format="csr") if extra else m
    out.uns[UNS_PERTS] = np.array(perts + extra, dtype=object)
    return out


def _sha_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_fit(run: RunFolder, transcript: Transcript, node_id: str, refit: bool, universe: list[str] | None,
               adata: AnnData | None) -> Fit:
    """The fitted model for these inputs, made once and kept with the run (reused when its files
    still match their record)."""
    if refit:
        kept = kept_refits(run, node_id)
        covering = next((f for f in kept if set(universe) <= set(f.record["inputs"])), None)
        if covering is not None:
            return covering
        # a new refit carries every input an earlier one had, so the kept fits do not multiply
        universe = universe + [g for f in kept for g in f.record["inputs"] if g not in universe]
    name = (f"{node_id}-refit-{_sha_text(json.dumps(universe))[:12]}" if refit else f"{node_id}-as-trained")
    root = run.root / PREDICT_DIR / name
    fit = Fit(name, root, root / "data" if refit else run.sandbox_data, refit, reused=False)
    if not refit and _intact(fit):
        return fit
    res = _train(run, node_id, fit, refit_data(adata, universe) if refit else None)
    if not refit:
        recorded = Tree.load(run.tree_json).nodes[node_id].predictions.get("test")
        again = res.output("pred_test.npy").sha256
        if again != recorded:
            shutil.rmtree(root)
            raise PredictionRefused(
                f"re-executing {node_id} did not reproduce its recorded test predictions (sha256 {again[:12]} "
                f"vs {recorded[:12]}): its trained state cannot be recovered exactly",
                where="--no-refit", fix="drop --no-refit to refit the selected model on every labelled unit")
    _keep(transcript, fit, node_id, res, "predict.refit" if refit else "predict.reexecute", {
        "inputs": universe if refit else load_meta(fit.data_dir)["perts"],
        "trained_on": ("every labelled unit (train, validation and test)" if refit
                       else "the node's own training split (re-executed, test predictions reproduced)")})
    return fit


def ensure_members(run: RunFolder, transcript: Transcript, node_id: str, full: Fit, k: int,
                   adata: AnnData) -> list[Fit]:
    """``k`` bootstrap refits of ``full`` (same inputs, resampled units; see ``uncertainty``), kept
    inside its folder and reused while their files match their record and ``full`` is the same fit."""
    members, base = [], None
    for seed in member_seeds(k):
        root = full.root / "members" / f"seed{seed}"
        fit = Fit(f"{full.name}-member-seed{seed}", root, root / "data", True, reused=False)
        if _intact(fit) and fit.record.get("member_of_sha256") == full.record["model_sha256"]:
            members.append(fit)
            continue
        fit.reused = False
        if base is None:
            base = refit_data(adata, full.record["inputs"])
        sample, drawn = bootstrap_units(base, seed)
        res = _train(run, node_id, fit, sample)
        _keep(transcript, fit, node_id, res, "predict.member", {
            "member_of": full.name, "member_of_sha256": full.record["model_sha256"], "seed": seed,
            "n_units": len(drawn), "n_distinct_units": len(set(drawn)), "units_drawn": drawn,
            "trained_on": (f"a bootstrap resample (seed {seed}) of the {len(drawn)} labelled perturbation units, "
                           f"with replacement ({len(set(drawn))} distinct), and every control cell")})
        members.append(fit)
    return members


def _train(run: RunFolder, node_id: str, fit: Fit, data: AnnData | None):
    """The node's code and config trained in the sandbox into ``fit`` (``data``: exported first;
    None: the run's own sandbox data), from scratch; PredictionRefused if it fails."""
    node_dir = run.node_dir(node_id)
    code, config = (node_dir / "model.py").read_text(), json.loads((node_dir / "config.json").read_text())
    if fit.root.exists():  # a fit left unfinished or altered: made again from scratch
        shutil.rmtree(fit.root)
    fit.root.mkdir(parents=True)
    if data is not None:
        export_sandbox_data(data, fit.data_dir)
    res = run_training(_backend(run), fit.data_dir, code, {**config, "save_model": True}, fit.model_dir,
                       timeout_s=run.config().node_timeout_s, run_id=run.config().run_id)
    if not res.ok or res.output("model.pt") is None:
        shutil.rmtree(fit.root)
        raise PredictionRefused(f"fitting {node_id} for prediction failed ({res.status}): "
                                f"{(res.stderr_tail or res.stdout_tail)[-400:]}", where=str(run.root),
                                fix="see the node's own logs; the run's model may not survive a refit")
    return res


def _keep(transcript: Transcript, fit: Fit, node_id: str, res, event: str, facts: dict) -> None:
    """``fit.json`` written and the fit put on the transcript, every file with its sha256."""
    files = [fit.model_dir / f for f in ("model.py", "config.json", "model.pt", "pred_test.npy")]
    if fit.refit:
        files += sorted(p for p in fit.data_dir.iterdir() if p.is_file())
    fit.record = {"fit": fit.name, "node": node_id, "refit": fit.refit, "backend": res.backend,
                  "wall_s": res.wall_s, "model_sha256": res.output("model.pt").sha256, **facts}
    record_path = fit.root / "fit.json"
    atomic.write_json(record_path, fit.record)
    # events: asked after the run, not decisions a `replay --rerun` must reproduce; their
    # artifacts are still checked by `replay --verify` like any record's
    said = {k: v for k, v in fit.record.items() if k not in ("inputs", "units_drawn")}
    if "inputs" in fit.record:
        said["n_inputs"] = len(fit.record["inputs"])
    transcript.append("event", SOURCE, event, {"args": {"node": node_id, "refit": fit.refit}, "result": said},
                      [transcript.artifact(f) for f in [*files, record_path]])


def _intact(fit: Fit) -> bool:
    """Whether ``fit`` was made and its model file is still the one recorded (then it is reused)."""
    path = fit.root / "fit.json"
    if not path.exists() or not (fit.model_dir / "model.pt").exists():
        return False
    rec = json.loads(path.read_text())
    if atomic.sha256_file(fit.model_dir / "model.pt") != rec.get("model_sha256"):
        return False
    fit.reused, fit.record = True, rec
    return True


def kept_refits(run: RunFolder, node_id: str) -> list[Fit]:
    """The node's intact refits kept with the run, the widest first."""
    fits = [Fit(p.name, p, p / "data", True, reused=False)
            for p in sorted((run.root / PREDICT_DIR).glob(f"{node_id}-refit-*")) if p.is_dir()]
    return sorted((f for f in fits if _intact(f) and "inputs" in f.record), key=lambda f: -len(f.record["inputs"]))


# --- predicting ---------------------------------------------------------------------------------
@dataclass
class Answered:
    """What one sandbox call returns: the first fit's predictions, the other fits', sampled cells."""

    pred: np.ndarray  # (queries, genes)
    members: np.ndarray | None = None  # (members, queries, genes)
    cells: np.ndarray | None = None  # (queries, N, genes)
    files: list[Path] = field(default_factory=list)


def sandbox_predict(run: RunFolder, fits: list[Fit], queries: list[Query], call_dir: Path,
                    draws: np.ndarray | None = None, cells_seed: int = 0, name: str = "sandbox") -> Answered:
    """``fits`` (all over the same control cells: a fit and its members) answer ``queries`` in one
    sandbox job; with ``draws`` the first also samples one cell per drawn control cell."""
    meta = load_meta(fits[0].data_dir)
    perts, contexts = meta["perts"], meta["contexts"]
    train = np.load(fits[0].data_dir / "train.npz")
    doses = train["dose"][train["mask"] > 0]
    dose = float(np.median(doses)) if doses.size else 1.0  # the typical dose of the data's perturbations
    mask = np.zeros((len(queries), len(perts)), np.float32)
    for i, q in enumerate(queries):
        for part in q.condition.split(COMBO_SEP):
            mask[i, perts.index(part)] = 1.0
    call_dir.mkdir(parents=True, exist_ok=True)
    qpath = call_dir / ("queries.npz" if name == "sandbox" else f"{name}-queries.npz")
    arrays = {"mask": mask, "dose": mask * dose,
              "context": np.array([contexts.index(q.context) for q in queries], np.int32)}
    if draws is not None:
        arrays.update(cell_ctrl=draws, cell_seed=np.int64(cells_seed))
    atomic.write_with(qpath, lambda p: p.write_bytes(_npz_bytes(**arrays)))
    backend = _backend(run)
    out = call_dir / name
    out.mkdir(parents=True)
    fit_inputs = {f"fit{i}": f.model_dir for i, f in enumerate(fits)}
    job = Job(command=[], workdir=out, timeout_s=run.config().node_timeout_s, env=dict(NODE_ENV),
              run_id=run.config().run_id,
              inputs={"data": fits[0].data_dir, "harness": HARNESS, "script": SANDBOX_SCRIPT, "queries": qpath,
                      **fit_inputs})
    job.command = [backend.python(), backend.input_path(job, "script"),
                   *[x for n in ("harness", "data", "queries") for x in (f"--{n}", backend.input_path(job, n))],
                   "--out", ".", "--fit", *[backend.input_path(job, n) for n in fit_inputs]]
    res = backend.run(job)
    if not res.ok or res.output("pred.npy") is None:
        raise PredictionRefused(f"the model failed to answer in the sandbox ({res.status}): "
                                f"{(res.stderr_tail or res.stdout_tail)[-400:]}", where=str(call_dir))
    got = Answered(np.load(out / "pred.npy"), files=[qpath, out / "pred.npy"])
    if len(fits) > 1:
        got.members = np.load(out / "members.npy")
        got.files.append(out / "members.npy")
    if draws is not None:
        got.cells = np.load(out / "cells.npy")
        got.files.append(out / "cells.npy")
    shape = (len(queries), len(meta["genes"]))
    for what, arr, want in (("answer", got.pred, shape), ("members' answer", got.members, (len(fits) - 1, *shape)),
                            ("cells", got.cells, None if draws is None else (*draws.shape, shape[1]))):
        if arr is not None and (arr.shape != want or not np.isfinite(arr).all()):
            raise PredictionRefused(f"the model's {what} has shape {arr.shape} or non-finite values", where=str(out))
    return got


def _npz_bytes(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def held_out_rows(run: RunFolder, node_id: str) -> dict[tuple[str, str], np.ndarray]:
    """The node's own predictions for its validation and test queries, checked by sha256."""
    meta = load_meta(run.sandbox_data)
    shas = Tree.load(run.tree_json).nodes[node_id].predictions
    out = {}
    for split in ("val", "test"):
        path = run.node_dir(node_id) / f"pred_{split}.npy"
        if not path.exists() or atomic.sha256_file(path) != shas.get(split):
            raise PredictionRefused(f"{path.name} of {node_id} is missing or changed since it was scored",
                                    where=str(path), fix="`harmonycell replay RUN --verify` names what changed")
        pred = np.load(path)
        for q, row in zip(meta["queries"][split], pred):
            out[(q["condition"], q["context"])] = row
    return out


def control_means(adata: AnnData, contexts: list[str]) -> dict[str, np.ndarray]:
    ctx = context_labels(adata.obs).to_numpy()
    ctrl = adata.obs["is_control"].astype(bool).to_numpy()
    return {c: dense(adata.X[np.flatnonzero(ctrl & (ctx == c))]).mean(0) for c in contexts}


@dataclass
class Answer:
    """One call's answer: the per-query means, the sampled cells (``cells=N``), where it is kept."""

    means: AnnData
    cells: AnnData | None
    call_dir: Path


def predict(run_dir: Path, perturbations: list[str] | str, contexts: list[str] | str | None = None,
            refit: bool = True, members: int | None = None, cells: int | None = None,
            cells_seed: int = 0) -> AnnData:
    """The selected model's predicted response to ``perturbations`` (``"GENE"`` or ``"A+B"``) in
    ``contexts`` (default: every context the run saw). See the module docstring.

    ``members``: bootstrap refits behind ``layers['spread']`` (default 5 for a closed-form model,
    3 for a network; 1: none); refit only. ``cells``: return instead N cells per (perturbation,
    context), one observation each (sampled from a generative model, else the drawn control cells
    shifted by the predicted delta; ``cells_seed`` seeds which control cells), with the query's
    obs, ``predicted=True`` and ``sampled_from``. ``predict_call`` returns both."""
    got = predict_call(run_dir, perturbations, contexts, refit, members, cells, cells_seed)
    return got.cells if cells is not None else got.means


def predict_call(run_dir: Path, perturbations: list[str] | str, contexts: list[str] | str | None = None,
                 refit: bool = True, members: int | None = None, cells: int | None = None,
                 cells_seed: int = 0) -> Answer:
    """``predict``'s call, returning the means and (with ``cells``) the cells together."""
    import anndata

    perturbations = [perturbations] if isinstance(perturbations, str) else list(perturbations)
    contexts = [contexts] if isinstance(contexts, str) else contexts
    run = open_run(run_dir)
    transcript = Transcript(run.root)
    call_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    args = {"perturbations": perturbations, "contexts": contexts, "refit": refit, "members": members,
            "cells": cells, "call": call_id}
    try:
        check_members(members, refit)
        check_cells(cells)
        node_id = selected_node(run)
        adata = anndata.read_h5ad(run.unified)
        vocab = Vocabulary.of(adata, run.config().task)
        db = _gene_db()
        try:
            queries = resolve_queries(perturbations, contexts, vocab, db)
        finally:
            if db is not None:
                db.close()
        answer = _answer(run, transcript, node_id, queries, adata, vocab, call_id,
                         Asked(refit, members, cells, cells_seed))
    except InputError as exc:
        transcript.append("event", SOURCE, "prediction_refused", {"args": args, "reason": exc.one_line()})
        raise
    return answer


@dataclass(frozen=True)
class Asked:
    refit: bool
    members: int | None  # None: the default for the selected model
    cells: int | None
    cells_seed: int


def _answer(run: RunFolder, transcript: Transcript, node_id: str, queries: list[Query], adata: AnnData,
            vocab: Vocabulary, call_id: str, asked: Asked) -> Answer:
    call_dir = run.root / PREDICT_DIR / "calls" / call_id
    action = Tree.load(run.tree_json).nodes[node_id].action
    pred = np.zeros((len(queries), adata.n_vars), np.float32)
    source = [""] * len(queries)
    sample = asked.cells is not None and generative(action)  # else the cells are shifted controls
    draws = (draw_controls(adata, [q.context for q in queries], asked.cells, asked.cells_seed)
             if asked.cells is not None else None)
    fit, member_fits, member_preds, sampled, files = None, [], None, None, []
    if asked.refit:
        universe = list(vocab.perts)
        if vocab.genetic:  # every measured gene is an input too, so one refit answers most questions
            universe += [g for g in dict.fromkeys(vocab.measured.values()) if g not in universe]
        universe += [p for q in queries for p in q.condition.split(COMBO_SEP) if p not in universe]
        fit = ensure_fit(run, transcript, node_id, True, universe, adata)
        k = default_members(action) if asked.members is None else asked.members
        member_fits = ensure_members(run, transcript, node_id, fit, k, adata) if k > 1 else []
        got = sandbox_predict(run, [fit, *member_fits], queries, call_dir, draws if sample else None,
                              asked.cells_seed)
        pred[:], member_preds, sampled, files = got.pred, got.members, got.cells, got.files
        source = ["refit on every labelled unit"] * len(queries)
    else:
        own = held_out_rows(run, node_id)
        rest = [i for i, q in enumerate(queries) if (q.condition, q.context) not in own]
        for i, q in enumerate(queries):
            if (q.condition, q.context) in own:
                pred[i], source[i] = own[(q.condition, q.context)], "the node's own held-out prediction"
        if rest or sample:
            trained_on = set(load_meta(run.sandbox_data)["perts"])
            missing = sorted({p for i in rest for p in queries[i].condition.split(COMBO_SEP)} - trained_on)
            if missing:
                raise PredictionRefused(f"node {node_id} as trained has no input for {', '.join(missing)}",
                                        where="--no-refit", fix="drop --no-refit: the refit adds it as an input")
            trained = ensure_fit(run, transcript, node_id, False, None, None)
        if rest:
            fit = trained
            got = sandbox_predict(run, [fit], [queries[i] for i in rest], call_dir)
            pred[rest], files = got.pred, got.files
            for i in rest:
                source[i] = "the node as trained (re-executed)"
        if sample:  # a generative node as trained samples every query's cells, its own held-out ones too
            got = sandbox_predict(run, [trained], queries, call_dir, draws, asked.cells_seed, name="cells")
            sampled, files = got.cells, files + got.files
    spread_of = None if member_preds is None else facts(
        len(member_fits), member_seeds(len(member_fits)), [f.name for f in member_fits],
        [f.record["model_sha256"] for f in member_fits], member_fits[0].record["n_units"])
    result = build_anndata(run, node_id, queries, pred, source, adata, fit, asked.refit, spread_of)
    if member_preds is not None:
        result.layers[SPREAD_LAYER] = spread(member_preds)
    call_dir.mkdir(parents=True, exist_ok=True)
    path = call_dir / "pred.h5ad"
    atomic.write_with(path, result.write_h5ad)
    kept = [path]
    cell_data = None
    if asked.cells is not None:
        made = (np.clip(sampled, 0.0, None) if sample else shifted(adata, draws, np.asarray(result.layers["delta"])))
        cell_data = cells_anndata(result, adata, draws, made, SAMPLED if sample else SHIFTED, asked.cells_seed)
        kept.append(call_dir / "cells.h5ad")
        atomic.write_with(kept[-1], cell_data.write_h5ad)
    transcript.append("event", SOURCE, "predict",
                      {"args": {"perturbations": sorted({q.requested for q in queries}),
                                "contexts": sorted({q.context for q in queries}), "refit": asked.refit,
                                "members": asked.members, "cells": asked.cells, "call": call_id},
                       "result": {"node": node_id, "fit": fit.name if fit else None,
                                  "fit_reused": fit.reused if fit else None, "n_queries": len(queries),
                                  "members": len(member_fits),
                                  "members_reused": sum(f.reused for f in member_fits),
                                  "cells": (SAMPLED if sample else SHIFTED) if asked.cells else None,
                                  "aliases": sorted({n for q in queries for n in q.notes})}},
                      [transcript.artifact(f) for f in kept + files])
    return Answer(result, cell_data, call_dir)


def build_anndata(run: RunFolder, node_id: str, queries: list[Query], pred: np.ndarray, source: list[str],
                  adata: AnnData, fit: Fit | None, refit: bool, spread_of: dict | None = None) -> AnnData:
    tree = Tree.load(run.tree_json)
    node = tree.nodes[node_id]
    ctrl = control_means(adata, sorted({q.context for q in queries}))
    pert_type = "crispr" if Vocabulary.of(adata, run.config().task).genetic else "other"
    obs = pd.DataFrame({
        "cell_type": [q.context.split("|", 1)[-1] for q in queries],
        "batch_id": "predicted",
        "donor_id": "unknown",
        "pert_type": pert_type,
        "is_control": False,
        "condition_name": [q.condition for q in queries],
        "dataset_id": [q.context.split("|", 1)[0] for q in queries],
        "predicted": True,
        "requested": [q.requested for q in queries],
        "context": [q.context for q in queries],
        "source": source,
        "resolution": ["; ".join(q.notes) for q in queries],
    }, index=[f"{q.condition}@{q.context}" for q in queries])
    var = adata.var.copy()
    out = AnnData(X=pred.astype(np.float32), obs=obs, var=var)
    out.layers["delta"] = pred - np.stack([ctrl[q.context] for q in queries])
    cfg = run.config()
    out.uns["harmonycell"] = {
        "notice": NOTICE,
        "run_id": cfg.run_id,
        "run": str(run.root),
        "task": cfg.task,
        "model": {"node": node_id, "action": node.action,
                  "code_sha256": atomic.sha256_file(run.node_dir(node_id) / "model.py"),
                  "fit": fit.name if fit else "none (the node's own held-out predictions)",
                  "model_sha256": fit.record.get("model_sha256", "") if fit else "",
                  "refit": refit,
                  "trained_on": fit.record.get("trained_on", "") if fit else "the node's own training split"},
        "verdict": verdict_summary(run),
        "uncertainty": sentence(spread_of) if spread_of else none_because(ONE_MEMBER if refit else NO_REFIT),
        "delta": "layers['delta']: prediction minus the mean of the context's measured control cells",
    }
    if spread_of:
        out.uns["harmonycell"]["spread"] = spread_of
    return out
