"""The Unifier's engine: audited inputs + mapping specs -> one canonical AnnData (SPEC section 2).

Per input: read, reject bad input (duplicate names, NaN/inf/negative X), infer or take the
mapping spec, validate and repair it against the data, map obs, drop cells whose perturbation is
unknown, normalise raw counts only. Then merge inputs on genes (Ensembl where every input has
it, else symbols), build the perturbation vocabulary, mask and dose, split when a task is given,
and only then choose the task's genes, on training cells alone (``genes``).
``write_unify_outputs`` writes it all atomically.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from pydantic import BaseModel, Field

from harmonycell.tools.record import atomic
from harmonycell.tools.data.apply import AppliedObs, GeneIds, apply_obs, gene_ids
from harmonycell.tools.data.audit import (
    AuditReport,
    check_h5ad_file,
    describes,
    fingerprint_matrix,
    profile_obs,
    profile_var,
)
from harmonycell.tools.data.harmonise import fold_label_case, harmonise_cell_types
from harmonycell.tools.genes.db import GeneDB
from harmonycell.tools.genes.rename import GeneRenames, open_for_unify, rename_labels, rename_var
from harmonycell.tools.data.species import species_of
from harmonycell.tools.errors import HarmonyCellError, InputError, SpecError
from harmonycell.tools.data.mapping import SPEC_FIELDS, LabelNote, LabelReader, MappingSpec, infer_mapping, label_notes
from harmonycell.tools.schema import (
    CONTROL_LABEL,
    N_HVG,
    OBS_FIELDS,
    OBSM_DOSE,
    OBSM_MASK,
    UNS_PERTS,
    VAR_SYMBOL,
    canonical_condition,
    split_condition,
)
from harmonycell.tools.data.spec_check import Repair, validate_and_repair
from harmonycell.tools.data.genes import (
    UNS_GENE_SELECTION,
    UNS_PERT_EMBEDDING,
    perturbation_embedding,
    select_task_genes,
)
from harmonycell.tools.data.splits import assign_splits
from harmonycell.tools.tasks.registry import task_kind
from harmonycell.tools.data.validate import (
    check_duplicate_inputs,
    check_gene_names,
    check_options,
    check_same_species,
    check_unify_out,
    check_x,
    dataset_ids,
    shared_gene_check,
)


class FieldReport(BaseModel):
    type: str
    source: str | None = None
    confidence: float
    reason: str


class InputReport(BaseModel):
    dataset_id: str
    path: str
    n_cells_in: int
    n_cells_out: int
    controls: int
    perturbed: int
    dropped: int
    dropped_reasons: dict[str, int] = Field(default_factory=dict)
    conditions: int  # distinct perturbed conditions
    pert_type: dict[str, int]  # perturbed cells per pert_type
    already_log: bool
    normalised: bool
    gene_id_type: str
    genes_in: int
    genes_lost_in_merge: int = 0
    scale: str = ""  # counts | log | normalised (see audit.scale_of)
    species: str = ""
    species_evidence: str = ""
    policy: str
    fields: dict[str, FieldReport]
    repairs: list[Repair] = Field(default_factory=list)
    # every label of the perturbation column: read as what, from which tokens, by which rule
    labels: list[LabelNote] = Field(default_factory=list)


class UnifyReport(BaseModel):
    inputs: list[InputReport]
    n_cells: int
    n_genes: int
    gene_key: str  # what genes were aligned on: ensembl or symbol
    genes_common: int
    n_hvg: int
    perturbations: int  # vocabulary size
    conditions: int
    task: str | None = None
    seed: int | None = None
    split_info: dict | None = None  # units of each split and the rule that made them
    gene_selection: dict | None = None  # the rule that chose the task's genes, and its counts
    genes: list[str] = Field(default_factory=list, exclude=True)  # written to genes.json
    # merges made by tools/data/harmonise.py: {"labels": {variant: kept}, "cell_types": {...}}
    harmonised: dict = Field(default_factory=dict)
    # gene names read as current symbols through the gene database (tools/genes/rename.py)
    gene_names: GeneRenames = Field(default_factory=GeneRenames)


@dataclass
class UnifyOutcome:
    adata: AnnData
    specs: dict[str, MappingSpec]
    report: UnifyReport
    audits: dict[str, AuditReport]


@dataclass
class Prepared:
    spec: MappingSpec
    audit: AuditReport
    applied: AppliedObs
    adata: AnnData  # kept cells, X normalised, float32 CSR
    genes: GeneIds
    repairs: list[Repair]
    species: tuple[str, str] = ("unknown", "")
    labels: list[LabelNote] = field(default_factory=list)


def read_h5ad(path: Path) -> AnnData:
    check_h5ad_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ad.read_h5ad(path)
    except Exception as e:  # anndata/h5py raise many kinds for broken files
        raise InputError(f"cannot be read as AnnData ({type(e).__name__}: {e})", where=str(path),
                         fix="re-export it with anndata (adata.write_h5ad)") from None


def as_csr32(X) -> sp.csr_matrix:
    if sp.issparse(X):
        X = X.tocsr() if not sp.isspmatrix_csr(X) else X
        if X.dtype != np.float32:
            X = X.astype(np.float32)
        return X
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def check_names(path: Path, adata: AnnData) -> None:
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise InputError(f"duplicate cell names ({int(adata.obs_names.duplicated().sum())}, e.g. {', '.join(map(str, dup))})",
                         where=f"{path} obs_names", fix="make them unique, e.g. adata.obs_names_make_unique()")
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()][:3].tolist()
        raise InputError(f"non-unique gene names ({int(adata.var_names.duplicated().sum())}, e.g. {', '.join(map(str, dup))})",
                         where=f"{path} var_names", fix="make them unique (adata.var_names_make_unique()) or index by Ensembl id")
    if adata.n_obs == 0 or adata.n_vars == 0:  # before the duplicate checks can be misleading
        raise InputError(f"no data: {adata.n_obs} cells x {adata.n_vars} genes", where=str(path),
                         fix="check that the right file was exported")


def drop_rows_inplace(X: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """Remove rows of a CSR matrix by shifting runs of kept rows forward in its own arrays.

    ``X[keep]`` would allocate a second matrix of nearly the same size (usually to drop ~1% of
    cells). Here each run of consecutive kept rows is one slice move (numpy handles the overlap),
    so the extra memory is at most one run and the work one pass over the kept values."""
    data, indices, indptr = X.data, X.indices, X.indptr
    keep = np.asarray(keep, dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.view(np.int8), [0]])))
    w = 0
    for r0, r1 in zip(edges[::2], edges[1::2]):  # runs [r0, r1) of kept rows
        a, b = int(indptr[r0]), int(indptr[r1])
        if w != a:
            data[w:w + (b - a)] = data[a:b]
            indices[w:w + (b - a)] = indices[a:b]
        w += b - a
    counts = np.diff(indptr)[keep]
    new_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(indptr.dtype)
    out = sp.csr_matrix((data[:w], indices[:w], new_indptr), shape=(int(keep.sum()), X.shape[1]))
    out.has_sorted_indices = X.has_sorted_indices
    return out


def normalise(adata: AnnData, spec: MappingSpec) -> None:
    """normalize_total + log1p in place, only for raw counts (the spec's facts, checked)."""
    import scanpy as sc

    if spec.normalization_required:
        with warnings.catch_warnings():  # zero-count cells stay zero: the warning changes nothing
            warnings.simplefilter("ignore")
            sc.pp.normalize_total(adata, target_sum=spec.target_sum)
            sc.pp.log1p(adata)


def prepare(path: Path, spec: MappingSpec | None, dataset_id: str, audit: AuditReport | None = None) -> Prepared:
    """One input, read once; ``audit`` (made at the door or by the DataAuditor) is carried when it
    describes this file, else X is fingerprinted from memory."""
    adata = read_h5ad(path)
    check_names(path, adata)
    adata.X = as_csr32(adata.X)
    if not describes(audit, path, adata.n_obs, adata.n_vars):
        audit = audit_from_memory(path, adata)
    check_x(audit, str(path))
    obs = adata.obs
    if spec is None:
        spec = infer_mapping(audit, obs, dataset_id=dataset_id, var=adata.var)
    else:
        spec = spec.model_copy(update={"dataset_id": dataset_id, "source": str(path)})
    spec, repairs = validate_and_repair(spec, audit, obs, adata.var)
    applied = apply_obs(spec, obs)
    notes = label_notes(spec, obs, LabelReader.for_file(audit, adata.var))
    genes = gene_ids(spec, adata.var)
    check_gene_names(genes.symbol, genes.ensembl, str(path))
    species = species_of(genes.symbol, genes.ensembl)
    # keep only what the canonical file needs: drop layers, obsm etc. before any copy
    X = adata.X
    del adata
    keep = applied.keep
    if not keep.all():
        X = drop_rows_inplace(X, keep)
    out = AnnData(X=X, obs=applied.kept.drop(columns=["dose"]).copy())
    out.obs["_dose"] = applied.kept["dose"].to_numpy()
    out.var_names = genes.symbol.index.astype(str)
    normalise(out, spec)
    return Prepared(spec, audit, applied, out, genes, repairs, species, notes)


def audit_from_memory(path: Path, adata: AnnData) -> AuditReport:
    """The audit, but with X fingerprinted from memory (the file was just read: no second pass
    over the disk)."""
    return AuditReport(
        path=str(path), name=path.stem, n_cells=adata.n_obs, n_genes=adata.n_vars,
        x=fingerprint_matrix(adata.X), obs=profile_obs(adata.obs),
        obs_names_unique=bool(adata.obs_names.is_unique),
        obs_names_examples=[str(v) for v in adata.obs_names[:5]],
        var=profile_var(adata.var), layers=sorted(adata.layers.keys()), obsm=sorted(adata.obsm.keys()),
    )


def gene_table(preps: list[Prepared]) -> tuple[str, pd.DataFrame, list[np.ndarray], list[int]]:
    """Align genes across inputs. Returns (key kind, var of the result, per-input row indices into
    its genes in result order, per-input genes lost)."""
    use_ens = all(p.genes.ensembl.notna().mean() > 0.9 for p in preps)
    kind = "ensembl" if use_ens else "symbol"
    keys = []
    for p in preps:
        k = (p.genes.ensembl if use_ens else p.genes.symbol.str.upper()).reset_index(drop=True)
        keys.append(k)
    common = None
    for k in keys:
        valid = k[k.notna() & ~k.duplicated(keep="first")]
        s = pd.Index(valid)
        common = s if common is None else common.intersection(s, sort=False)
    order = common
    rows, lost = [], []
    for k in keys:
        first = pd.Series(np.arange(len(k)), index=k)
        first = first[~first.index.duplicated(keep="first") & first.index.notna()]
        rows.append(first.reindex(order).to_numpy().astype(np.int64))
        lost.append(int(len(k) - len(order)))
    # result var: Ensembl id where any input knows it, else the symbol
    ens = pd.Series([None] * len(order), dtype=object)
    sym = pd.Series([None] * len(order), dtype=object)
    for p, r in zip(preps, rows):
        e = p.genes.ensembl.to_numpy()[r]
        s = p.genes.symbol.to_numpy()[r]
        ens = ens.where(ens.notna(), pd.Series(e, dtype=object))
        sym = sym.where(sym.notna(), pd.Series(s, dtype=object))
    index = ens.where(ens.notna(), sym).astype(str)
    if not index.is_unique:  # an Ensembl id shared by two symbols, or a symbol clash
        index = pd.Series(ad.utils.make_index_unique(pd.Index(index)), dtype=object)
    var = pd.DataFrame({VAR_SYMBOL: sym.astype(str).to_numpy()}, index=pd.Index(index, name=None))
    if ens.notna().any():
        var["ensembl_id"] = ens.fillna("").astype(str).to_numpy()
    return kind, var, rows, lost


def current_gene_names(preps: list[Prepared]) -> tuple[GeneDB | None, GeneRenames]:
    """Each human input's gene symbols read as current symbols (tools/genes/rename.py), in
    place; the database stays open for the labels (``merge``)."""
    db, why = open_for_unify()
    renames = GeneRenames(note=why)
    if db is None:
        return None, renames
    renames.database = db.version
    other = [f"{p.spec.dataset_id} ({p.species[0]})" for p in preps if p.species[0] != "human"]
    if other:  # one species per merge (check_same_species): then nothing here is human
        renames.note = f"gene names left as written: the gene database is human only, not {', '.join(other)}"
        db.close()
        return None, renames
    for p in preps:
        p.genes.symbol = rename_var(db, p.spec.dataset_id, p.genes.symbol, renames)
    return db, renames


def merge(preps: list[Prepared], db: GeneDB | None = None,
          renames: GeneRenames | None = None) -> tuple[AnnData, str, list[int]]:
    """Inputs joined on their shared genes; with ``db``, genetic perturbation labels are read as
    current symbols too (recorded in ``renames``)."""
    check_same_species([(p.spec.dataset_id, *p.species) for p in preps])
    shared_gene_check([(p.spec.dataset_id, p.genes) for p in preps], [p.audit.path for p in preps])
    kind, var, rows, lost = gene_table(preps)
    mats, obs = [], []
    for p, r in zip(preps, rows):
        X = p.adata.X
        if not (len(r) == X.shape[1] and np.array_equal(r, np.arange(len(r)))):
            X = X[:, r]
        mats.append(X)
        obs.append(p.adata.obs)
    X = mats[0] if len(mats) == 1 else sp.vstack(mats, format="csr")
    o = pd.concat(obs, axis=0)
    o["condition_name"], label_merges = fold_label_case(o["condition_name"])
    if db is not None:
        o["condition_name"] = rename_labels(db, o["condition_name"], o["pert_type"], renames,
                                            split_condition, canonical_condition)
    o["cell_type"], ct_merges = harmonise_cell_types(o["cell_type"])
    if not o.index.is_unique:  # two inputs reuse cell names: prefix with the dataset
        o.index = (o["dataset_id"].astype(str) + ":" + o.index.astype(str)).to_numpy()
        if not o.index.is_unique:
            raise InputError("duplicate cell names after merging", where="inputs",
                             fix="give the inputs distinct dataset ids")
    merged = AnnData(X=X, obs=o, var=var)
    merged.uns["harmonised"] = {"labels": label_merges, "cell_types": ct_merges}
    return merged, kind, lost


def perturbation_arrays(obs: pd.DataFrame) -> tuple[list[str], sp.csr_matrix, sp.csr_matrix]:
    """Vocabulary of single perturbations, multi-hot mask and dose (normalised per perturbation
    by its largest dose; 1.0 where the source has no dose), and the scale used."""
    cond = obs["condition_name"].astype(str)
    cats = pd.Categorical(cond)
    parts = {c: split_condition(c) for c in cats.categories}
    vocab = sorted({p for ps in parts.values() for p in ps})
    col = {p: i for i, p in enumerate(vocab)}
    codes = cats.codes
    n = len(obs)
    cat_cols = [[col[p] for p in parts[c]] for c in cats.categories]
    counts = np.array([len(cat_cols[c]) for c in codes], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.fromiter((j for c in codes for j in cat_cols[c]), dtype=np.int64, count=int(indptr[-1]))
    mask = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n, len(vocab)))
    raw = obs["_dose"].to_numpy(dtype=float) if "_dose" in obs else np.full(n, np.nan)
    per_entry = np.repeat(raw, counts)
    dose_vals = np.ones(len(indices), dtype=np.float32)
    ok = np.isfinite(per_entry) & (per_entry > 0)
    if ok.any():
        # per (dataset, perturbation) maximum, so doses of different units never mix
        ds = np.repeat(obs["dataset_id"].astype(str).to_numpy(), counts)
        key = pd.Series(ds[ok]) + "|" + pd.Series(indices[ok]).astype(str)
        grouped = pd.Series(per_entry[ok]).groupby(key.to_numpy())
        mx = grouped.transform("max").to_numpy()
        dose_vals[ok] = (per_entry[ok] / mx).astype(np.float32)
        top = grouped.max()
        scale = {"dataset_id": [k.split("|")[0] for k in top.index],
                 "perturbation": [vocab[int(k.rsplit("|", 1)[1])] for k in top.index],
                 "max_dose": top.to_numpy(dtype=float).tolist()}
    else:
        scale = {"dataset_id": [], "perturbation": [], "max_dose": []}
    dose = sp.csr_matrix((dose_vals, indices, indptr), shape=(n, len(vocab)))
    return vocab, mask, dose, scale


def input_report(p: Prepared, lost: int) -> InputReport:
    kept = p.applied.kept
    pert = kept.loc[~kept["is_control"]]
    fields = {}
    for name, fm in p.spec.fields().items():
        fields[name] = FieldReport(type=fm.type, source=fm.source_key or fm.expression or
                                   (None if fm.value is None else str(fm.value)),
                                   confidence=fm.confidence, reason=fm.reason)
    return InputReport(
        dataset_id=p.spec.dataset_id, path=p.audit.path, n_cells_in=p.audit.n_cells, n_cells_out=len(kept),
        controls=int(kept["is_control"].sum()), perturbed=len(pert),
        dropped=int((~p.applied.keep).sum()), dropped_reasons=p.applied.dropped,
        conditions=int(pert["condition_name"].nunique()),
        pert_type={k: int(v) for k, v in pert["pert_type"].value_counts().items()},
        already_log=p.spec.is_already_log1p, normalised=p.spec.normalization_required,
        gene_id_type=p.audit.var.index_type, genes_in=p.audit.n_genes, genes_lost_in_merge=lost,
        scale=p.audit.x.scale, species=p.species[0], species_evidence=p.species[1],
        policy=p.spec.policy, fields=fields, repairs=p.repairs, labels=p.labels,
    )


def unify(paths: list[Path], task: str | None = None, seed: int = 0, n_hvg: int = N_HVG,
          specs: dict[str, MappingSpec] | None = None, fold: tuple[int, int] | None = None,
          hold_out: list[str] | None = None, audits: dict[str, AuditReport] | None = None) -> UnifyOutcome:
    """Unify ``paths`` into one canonical AnnData. ``specs`` (stem -> spec) come from a caller's
    policy (e.g. an LLM); they are validated and repaired exactly like builtin ones. ``audits``
    (stem -> audit) are the inputs' audits made earlier, carried instead of made again. ``fold``
    (k, K): the test units are fold k of a seeded K-fold partition (see ``splits``); ``hold_out``
    names the cell types the test must hold out (a kind that ``takes_hold_out``)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no input files", where="unify", fix="pass one or more .h5ad files")
    if task is not None:
        task_kind(task)  # an unknown kind is refused before the inputs are read
    specs, audits = specs or {}, audits or {}
    check_options(n_hvg=n_hvg)
    for path in paths:
        check_h5ad_file(path)
    check_duplicate_inputs(paths)
    preps = []
    for path, did in zip(paths, dataset_ids(paths)):
        try:
            preps.append(prepare(path, specs.get(did) or specs.get(path.stem), did,
                                 audits.get(did) or audits.get(path.stem)))
        except HarmonyCellError as e:
            if e.where is None or str(path) not in str(e.where):
                e.where = f"{path}: {e.where}" if e.where else str(path)
                e.args = (e.one_line(),)
            raise
    db, renames = current_gene_names(preps)
    try:
        adata, key, lost = merge(preps, db, renames)
    finally:
        if db is not None:
            db.close()
    harmonised = dict(adata.uns.pop("harmonised", {}))
    for p in preps:
        p.adata = None  # type: ignore[assignment]  # merged: let the per-input copies go
    genes_common = adata.n_vars
    vocab, mask, dose, scale = perturbation_arrays(adata.obs)
    adata.obsm[OBSM_MASK] = mask
    adata.obsm[OBSM_DOSE] = dose
    adata.uns[UNS_PERTS] = vocab
    # pert_dose = dose / max_dose per (dataset, perturbation); doses parsed from text are in nM
    adata.uns["pert_dose_scale"] = scale
    obs = adata.obs
    adata.obs = pd.DataFrame({f: obs[f] for f in OBS_FIELDS}, index=obs.index)
    for c in ("cell_type", "batch_id", "donor_id", "pert_type", "condition_name", "dataset_id"):
        adata.obs[c] = adata.obs[c].astype(str).astype("category")
    adata.obs["is_control"] = adata.obs["is_control"].astype(bool)
    split_info = None
    # split first, then every data-dependent step on training cells only (SPEC section 7)
    if task is not None:
        assign_splits(adata, task, seed, fold=fold, hold_out=hold_out)
        split_info = dict(adata.uns["split_info"])
        embedding = perturbation_embedding(adata)
    adata, gene_record = select_task_genes(adata, n_hvg)
    adata.uns[UNS_GENE_SELECTION] = {k: v for k, v in gene_record.items() if k != "perturbed_genes_kept"}
    if task is not None:
        adata.uns[UNS_PERT_EMBEDDING] = embedding
    reports = [input_report(p, l) for p, l in zip(preps, lost)]
    report = UnifyReport(
        inputs=reports, n_cells=adata.n_obs, n_genes=adata.n_vars, gene_key=key, genes_common=genes_common,
        n_hvg=adata.n_vars, perturbations=len(vocab),
        conditions=int(adata.obs.loc[~adata.obs["is_control"], "condition_name"].nunique()),
        task=task, seed=seed if task else None, split_info=split_info,
        gene_selection=gene_record, genes=[str(g) for g in adata.var_names],
        harmonised=harmonised, gene_names=renames,
    )
    return UnifyOutcome(adata=adata, specs={p.spec.dataset_id: p.spec for p in preps}, report=report,
                        audits={p.spec.dataset_id: p.audit for p in preps})


def write_unify_outputs(outcome: UnifyOutcome, out_dir: Path) -> dict[str, Path]:
    """DIR/unified.h5ad, DIR/mapping/<stem>.json, DIR/unify_report.json, DIR/audit/<stem>.{md,json}.

    Everything is staged in a temporary folder beside DIR, then swapped in by two renames (a
    previous unify output is moved aside, then deleted): DIR is whole or absent, never half-written
    nor mixed with another input's outputs. A folder holding anything else is refused."""
    import re
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    check_unify_out(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for left in out_dir.parent.glob(f".{out_dir.name}.*"):  # a killed earlier write's staging folder
        if left.is_dir() and re.fullmatch(rf"\.{re.escape(out_dir.name)}\.(old\.)?[A-Za-z0-9_]{{8}}", left.name):
            shutil.rmtree(left, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    old = None
    try:
        failure = write_stage_reporting_once(outcome, stage)
        if failure is not None:
            raise failure
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            out_dir.replace(old / "previous")
        stage.replace(out_dir)
        return {str(p.relative_to(out_dir)): p for p in sorted(out_dir.rglob("*")) if p.is_file()}
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# Folders whose HDF5 write failed in this process. h5py's handles of such a file can crash the
# interpreter as it finalises (SIGSEGV after the error is reported); the CLI then leaves with
# os._exit once its one-line error is out.
BROKEN_WRITES: list[str] = []


def clean_os_error(e: OSError) -> OSError:
    """One line for a failed write: h5py's message spans lines and names its own internals."""
    import errno as errno_mod
    import os
    import re

    code = e.errno
    if code is None:
        m = re.search(r"errno = (\d+)", str(e))
        code = int(m.group(1)) if m else errno_mod.EIO
    return OSError(code, os.strerror(code), e.filename)


def write_stage_reporting_once(outcome: UnifyOutcome, stage: Path) -> OSError | None:
    """write_stage; a failed write (disk full) comes back as one OSError. After such a failure
    h5py's objects of the broken file print tracebacks from C as they are freed; stderr (fd 2) is
    held aside during the write and replayed only when the write succeeded."""
    import gc
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failure = None
        try:
            try:
                write_stage(outcome, stage)
            except OSError as e:
                failure = clean_os_error(e)
                # close the broken file's objects now: left to interpreter exit they can crash it
                import h5py

                h5py._objects.nonlocal_close()
                BROKEN_WRITES.append(str(stage))
            gc.collect()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        if failure is None:
            held.seek(0)
            text = held.read()
            if text:
                sys.stderr.write(text.decode(errors="replace"))
    return failure


def write_stage(outcome: UnifyOutcome, stage: Path) -> None:
    """Every unify output, into the staging folder."""
    outcome.adata.write_h5ad(stage / "unified.h5ad")
    for did, spec in outcome.specs.items():
        atomic.write_text(stage / "mapping" / f"{did}.json", spec.model_dump_json(indent=2) + "\n")
    for did, a in outcome.audits.items():
        atomic.write_text(stage / "audit" / f"{did}.md", a.to_markdown())
        atomic.write_text(stage / "audit" / f"{did}.json", a.model_dump_json(indent=2) + "\n")
    atomic.write_text(stage / "unify_report.json", outcome.report.model_dump_json(indent=2) + "\n")
    # what was held out and which genes the task kept, each with the rule that chose it
    if outcome.report.split_info is not None:
        atomic.write_json(stage / "split.json", outcome.report.split_info)
    atomic.write_json(stage / "genes.json", {**(outcome.report.gene_selection or {}),
                                             "genes": outcome.report.genes})


__all__ = ["UnifyOutcome", "UnifyReport", "InputReport", "unify", "write_unify_outputs", "SPEC_FIELDS",
           "SpecError", "CONTROL_LABEL"]
