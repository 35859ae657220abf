"""Validation at the door: every input file, option and the output folder, checked before work.

One place for every check that can be made before a run starts, so a bad input ends with one
line (what, where, what to do) and exit code 2, and nothing is written. The same checks are
called by the Unifier's engine on the data it reads (one definition of each rule); this module
never imports the engine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harmonycell.tools.data.apply import GeneIds, apply_obs, gene_ids
from harmonycell.tools.data.audit import AuditReport, audit_h5ad, open_h5ad, read_obs_var_backed
from harmonycell.tools.data.harmonise import fold_label_case, harmonise_cell_types
from harmonycell.tools.data.mapping import MappingSpec, infer_mapping
from harmonycell.tools.data.spec_check import validate_and_repair
from harmonycell.tools.data.species import numeric_share, species_of
from harmonycell.tools.errors import InputError, SpecError
from harmonycell.tools.record import atomic
from harmonycell.tools.tasks.registry import task_kind

MIN_CELLS = 10
MIN_GENES = 10
MIN_VARYING_GENES = 5
FREE_SPACE_FACTOR = 3  # outputs (unified data, task arrays, nodes) stay within 3x the inputs
FREE_SPACE_MIN = 64 << 20
UNIFY_MARKER = "unify_report.json"  # a folder holding it is a previous `unify` output


# --- options ----------------------------------------------------------------------------------
def check_options(**options) -> None:
    """Positive integers where the product needs them (typer checks types, not meaning)."""
    for name, value in options.items():
        if value is None:
            continue
        if name in ("n_hvg", "budget", "epochs", "budget_nodes") and value < 1:
            raise InputError(f"must be at least 1, got {value}", where=f"--{name.replace('_', '-')}",
                             fix="pass a positive number")
        if name == "seed" and value < 0:
            raise InputError(f"must be 0 or more, got {value}", where="--seed", fix="pass a non-negative seed")


# --- output folder ----------------------------------------------------------------------------
def nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_out_dir(out: Path, need_bytes: int = 0, option: str = "--out") -> None:
    """The output folder can be created and written, and has room."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is a file, not a folder", where=f"{option} {out}",
                         fix="name a folder (it is created if missing)")
    base = nearest_existing(out)
    if not base.is_dir():
        raise InputError(f"{base} is a file, so the folder cannot be created", where=f"{option} {out}",
                         fix="name a folder under an existing directory")
    try:  # os.access says yes to root on a read-only file system: try it
        fd, probe = tempfile.mkstemp(prefix=".harmonycell-write-test.", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"cannot write in {base} ({e.strerror or e})", where=f"{option} {out}",
                         fix="choose a writable folder") from None
    need = max(need_bytes, FREE_SPACE_MIN)
    free = shutil.disk_usage(base).free
    if free < need:
        raise InputError(f"only {free / 2**20:.0f} MiB free, about {need / 2**20:.0f} MiB needed",
                         where=f"{option} {out}", fix="free disk space or choose another folder")


def check_unify_out(out: Path) -> str | None:
    """``unify --out``: empty/new, or a previous unify output (replaced whole; the note says so).
    Anything else is refused: outputs of two inputs are never mixed."""
    out = Path(out)
    if not out.exists() or not any(out.iterdir()):
        return None
    if (out / UNIFY_MARKER).exists():
        return f"{out} held a previous unify output: replaced as a whole"
    raise InputError("folder is not empty and holds no HarmonyCell unify output", where=f"--out {out}",
                     fix="choose a new or empty folder (existing files are never mixed with new outputs)")


# --- input files ------------------------------------------------------------------------------
def check_duplicate_inputs(paths: list[Path]) -> None:
    """The same file twice (or two files with the same bytes) would be train and test data."""
    sizes: dict[int, int] = {}
    for p in paths:
        size = Path(p).resolve().stat().st_size
        sizes[size] = sizes.get(size, 0) + 1
    seen: dict[str, Path] = {}
    for p in paths:
        rp = Path(p).resolve()
        size = rp.stat().st_size
        if sizes[size] < 2:  # files of different sizes differ: no need to read a whole file to know
            continue
        key = f"{size}:{atomic.sha256_file(rp)}"
        if key in seen:
            same = "is the same file as" if seen[key] == rp else "has the same content (sha256) as"
            raise InputError(f"{p} {same} {seen[key]}", where="inputs",
                             fix="pass each dataset once (a copy would be both training and test data)")
        seen[key] = rp


def check_files(paths: list[Path]) -> None:
    if not paths:
        raise InputError("no input files given", where="inputs", fix="pass one or more .h5ad files")
    for p in paths:
        with open_h5ad(Path(p)):
            pass
    check_duplicate_inputs([Path(p) for p in paths])


# --- data -------------------------------------------------------------------------------------
def check_x(audit, where: str) -> None:
    """Degenerate matrices and scales that cannot be identified are refused, never trained on."""
    x = audit.x
    if audit.n_cells == 0 or audit.n_genes == 0:
        raise InputError(f"no data: {audit.n_cells} cells x {audit.n_genes} genes", where=where,
                         fix="check that the right file was exported")
    if not audit.obs_names_unique:
        raise InputError("duplicate cell names", where=f"{where} obs_names",
                         fix="make them unique, e.g. adata.obs_names_make_unique()")
    if not audit.var.index_unique:
        raise InputError("non-unique gene names", where=f"{where} var_names",
                         fix="make them unique (adata.var_names_make_unique()) or index by Ensembl id")
    if audit.n_cells < MIN_CELLS:
        raise InputError(f"only {audit.n_cells} cells (at least {MIN_CELLS} needed)", where=where,
                         fix="check that the right file was exported")
    if audit.n_genes < MIN_GENES:
        raise InputError(f"only {audit.n_genes} gene(s) (at least {MIN_GENES} needed)", where=f"{where} var",
                         fix="export the expression matrix with all measured genes")
    if x.n_nonfinite:
        raise InputError(f"X holds {x.n_nonfinite} NaN/inf values", where=f"{where} X",
                         fix="replace or drop them before unifying (e.g. np.nan_to_num on the raw counts)")
    if x.n_negative:
        raise InputError(f"X holds {x.n_negative} negative values (min {x.min:.3g}): scaled or "
                         "centred data, not counts or log-normalised expression", where=f"{where} X",
                         fix="pass the raw counts or the log-normalised matrix (e.g. from a layer or .raw)")
    if x.scale == "zero":
        raise InputError("every value of X is 0: no expression measured", where=f"{where} X",
                         fix="export the matrix that holds the counts (a layer or .raw)")
    if 0 <= x.genes_varying < MIN_VARYING_GENES:
        raise InputError(f"only {x.genes_varying} gene(s) vary between cells: no signal to learn",
                         where=f"{where} X", fix="export the real expression matrix (a layer or .raw)")
    if x.scale == "log-twice":
        raise InputError(f"the scale cannot be identified: {x.reason}", where=f"{where} X",
                         fix="pass the raw counts, or the matrix log-normalised once (expm1 undoes one log1p)")


def check_gene_names(symbols, ensembl, where: str) -> None:
    if numeric_share(symbols) >= 0.5 and (ensembl is None or ensembl.notna().mean() < 0.5):
        raise InputError("gene names are plain numbers (e.g. '0', '1', ...), not gene identifiers",
                         where=f"{where} var_names",
                         fix="set var_names to gene symbols or Ensembl ids (or name a var column holding them)")


def check_same_species(items: list[tuple[str, str, str]]) -> None:
    """items: (dataset_id, species, evidence). Known species must agree."""
    known = [(d, s, e) for d, s, e in items if s != "unknown"]
    if len({s for _, s, _ in known}) > 1:
        desc = "; ".join(f"{d}: {s} ({e})" for d, s, e in known)
        raise InputError(f"the inputs come from different species ({desc})", where="inputs",
                         fix="unify one species at a time (map orthologs to one species' symbols first if you mean to merge)")


def load_specs(spec_dir: Path | None) -> dict:
    """``--specs DIR``: <dataset>.json mapping specs, each validated against the schema."""
    if spec_dir is None:
        return {}
    spec_dir = Path(spec_dir)
    if not spec_dir.is_dir():
        raise InputError("spec folder not found", where=f"--specs {spec_dir}", fix="pass a folder of <stem>.json specs")
    specs = {}
    for p in sorted(spec_dir.glob("*.json")):
        try:
            specs[p.stem] = MappingSpec.model_validate_json(p.read_text())
        except ValueError as e:
            raise SpecError(f"not a valid mapping spec ({str(e).splitlines()[0]})", where=str(p),
                            fix="check it against tools/data/mapping_spec.schema.json") from None
    if not specs:
        raise InputError("no <stem>.json spec in the folder", where=f"--specs {spec_dir}",
                         fix="write one with `harmonycell audit FILE --write-spec DIR`")
    return specs


# --- inputs together ---------------------------------------------------------------------------
def dataset_ids(paths: list[Path]) -> list[str]:
    ids, seen = [], {}
    for p in paths:
        stem = p.stem
        seen[stem] = seen.get(stem, 0) + 1
        ids.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return ids


def describe_ids(genes: GeneIds) -> str:
    ens = genes.ensembl.notna().mean() if len(genes.ensembl) else 0.0
    sym = genes.symbol[genes.ensembl.isna()] if ens < 1 else genes.symbol.iloc[:0]
    parts = []
    if ens > 0:
        parts.append(f"Ensembl ids for {ens:.0%} of genes (e.g. {genes.ensembl.dropna().iloc[0]})")
    if len(sym):
        parts.append(f"names like {', '.join(map(str, sym.iloc[:3]))}")
    return " and ".join(parts) or "no gene names"


def shared_gene_check(keys: list[tuple[str, GeneIds]], paths: list[str]) -> None:
    """Refuse inputs that share no gene, saying what each one holds (not a generic hint)."""
    use_ens = all(g.ensembl.notna().mean() > 0.9 for _, g in keys)
    sets = [set(g.ensembl.dropna()) if use_ens else set(g.symbol.str.upper()) for _, g in keys]
    common = set.intersection(*sets) if sets else set()
    if common:
        return
    desc = "; ".join(f"{d} has {describe_ids(g)}" for d, g in keys)
    raise InputError(f"the inputs share no gene ({desc})", where=", ".join(paths),
                     fix="give every input the same kind of gene identifier (a var column of symbols or of "
                         "Ensembl ids in each, named in a mapping spec's gene_symbol_column/gene_id_column)")


# --- the door ---------------------------------------------------------------------------------
@dataclass
class Checked:
    """What the door learnt: a note per input (what will be done) and its audit, carried on to
    the DataAuditor and the Unifier instead of being made again."""
    notes: list[str] = field(default_factory=list)
    audits: dict[str, AuditReport] = field(default_factory=dict)  # by input path, as given


def preflight_data(paths: list[Path], specs: dict | None = None, mapping: bool = True, task=None) -> Checked:
    """Audit each input and dry-run the mapping and the task's split on the mapped labels:
    everything unify would refuse, refused now."""
    specs = specs or {}
    checked = Checked()
    notes, species, keys, mapped = checked.notes, [], [], []
    for path, did in zip(paths, dataset_ids(paths)):
        audit = audit_h5ad(path)
        checked.audits[str(path)] = audit
        check_x(audit, str(path))
        notes.append(f"{did}: {audit.x.reason}")
        if not mapping:
            continue
        obs, var = read_obs_var_backed(Path(path))
        spec = specs.get(did) or specs.get(Path(path).stem)
        try:
            spec = (spec.model_copy(update={"dataset_id": did, "source": str(path)}) if spec
                    else infer_mapping(audit, obs, dataset_id=did, var=var))
            spec, _ = validate_and_repair(spec, audit, obs, var)
        except (InputError, SpecError) as e:
            if e.where is None or str(path) not in str(e.where):
                e.where = f"{path}: {e.where}" if e.where else str(path)
                e.args = (e.one_line(),)
            raise
        mapped.append(apply_obs(spec, obs).kept)
        genes = gene_ids(spec, var)
        check_gene_names(genes.symbol, genes.ensembl, str(path))
        species.append((did, *species_of(genes.symbol, genes.ensembl)))
        keys.append((did, genes))
    check_same_species(species)
    if len(keys) > 1:
        shared_gene_check(keys, [str(p) for p in paths])
    if task is not None and mapped:
        check_task(pd.concat(mapped, axis=0), task)
    return checked


def check_task(obs, task) -> None:
    """Dry run of the task's split on the mapped labels (the split itself reads only obs)."""
    obs = obs.copy()
    obs["condition_name"], _ = fold_label_case(obs["condition_name"])
    obs["cell_type"], _ = harmonise_cell_types(obs["cell_type"])
    task_kind(task).split(obs.reset_index(drop=True), np.random.default_rng(0))


def door(files: list[Path], out: Path, *, task=None, specs_dir: Path | None = None, llm: bool = False,
         **options) -> Checked:
    """Every check that can be made before a run: options, output folder, files, data, mapping.
    With an LLM policy the mapping is the model's to write, so only the builtin dry run is skipped."""
    check_options(**options)
    files = [Path(f) for f in files]
    check_files(files)
    need = FREE_SPACE_FACTOR * sum(f.stat().st_size for f in files)
    check_out_dir(out, need)
    specs = load_specs(specs_dir)
    return preflight_data(files, specs, mapping=not llm or bool(specs), task=task)
