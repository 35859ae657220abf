"""DataAuditor's tool: a profile of one ``.h5ad`` file, read without densifying X.

The profile is what the mapping policy (builtin or LLM) sees: shape, a numerical fingerprint of
X (raw counts or log-normalised?), every obs column with dtype, cardinality and sampled values,
the var index type and candidate gene-symbol/Ensembl columns, and the layers. X is streamed from
the HDF5 file in chunks, so a file far larger than memory can be audited.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from harmonycell.tools.errors import InputError
from harmonycell.tools.record import atomic

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
# a symbol has a letter somewhere; mouse symbols may start with digits (0610009B22Rik)
SYMBOL_RE = re.compile(r"^(?=[^A-Za-z]*[A-Za-z])[A-Za-z0-9][A-Za-z0-9\-\.\_\@:]*$")
CHUNK_NNZ = 20_000_000  # values per streamed chunk of X: bounds audit memory to ~100 MB
PIECE = 1 << 18  # values per in-cache piece of a chunk
N_SAMPLED_VALUES = 12

IdType = Literal["symbol", "ensembl", "mixed", "other"]


class XFingerprint(BaseModel):
    """Numbers that tell raw counts from log-normalised values."""

    storage: str  # "csr_matrix", "csc_matrix" or "dense"
    dtype: str
    min: float
    max: float
    mean: float  # over all entries, zeros included
    sparsity: float  # fraction of zero entries
    is_integer: bool  # every stored value is a whole number
    n_nonfinite: int
    n_negative: int
    cell_sum_min: float
    cell_sum_median: float
    cell_sum_max: float
    looks_raw_counts: bool
    looks_log_normalised: bool
    reason: str
    # counts | log | normalised (CP10k/CPM/TPM-like, not logged) | log-twice | zero (see scale_of)
    scale: str = ""
    genes_varying: int = -1  # genes whose value differs between cells (-1: not measured)

    def needs_normalising(self) -> bool:
        """normalize_total + log1p is due for raw counts and for normalised-but-unlogged values."""
        return self.scale in ("counts", "normalised") if self.scale else self.looks_raw_counts


class ObsColumn(BaseModel):
    name: str
    dtype: str
    n_unique: int
    n_missing: int
    sampled_values: list[str]  # most frequent first
    top_counts: dict[str, int] = Field(default_factory=dict)
    numeric: bool


class VarProfile(BaseModel):
    index_type: IdType
    index_examples: list[str]
    index_unique: bool
    symbol_columns: list[str]  # columns that hold gene symbols
    ensembl_columns: list[str]  # columns that hold Ensembl ids
    columns: list[str]


class AuditReport(BaseModel):
    path: str
    name: str  # file stem: the default dataset_id
    n_cells: int
    n_genes: int
    x: XFingerprint
    obs: list[ObsColumn]
    obs_names_unique: bool
    obs_names_examples: list[str]
    var: VarProfile
    layers: list[str]
    obsm: list[str]

    def column(self, name: str) -> ObsColumn | None:
        return next((c for c in self.obs if c.name == name), None)

    def to_markdown(self) -> str:
        x = self.x
        lines = [
            f"# Audit of `{self.name}`",
            "",
            f"- file: `{self.path}`",
            f"- shape: {self.n_cells} cells x {self.n_genes} genes",
            f"- X: {x.storage} {x.dtype}; min {x.min:.4g}, max {x.max:.4g}, mean {x.mean:.4g}, "
            f"sparsity {x.sparsity:.3f}, integer-valued: {x.is_integer}",
            f"- per-cell sums: min {x.cell_sum_min:.4g}, median {x.cell_sum_median:.4g}, max {x.cell_sum_max:.4g}",
            f"- verdict: {SCALE_WORDS.get(x.scale, 'unclear')}"
            f" ({x.reason})",
            f"- non-finite values: {x.n_nonfinite}; negative values: {x.n_negative}",
            f"- layers: {', '.join(self.layers) or 'none'}; obsm: {', '.join(self.obsm) or 'none'}",
            f"- cell names unique: {self.obs_names_unique} (e.g. {', '.join(self.obs_names_examples[:3])})",
            "",
            "## var",
            f"- index type: {self.var.index_type} (e.g. {', '.join(self.var.index_examples[:5])}); unique: {self.var.index_unique}",
            f"- symbol columns: {', '.join(self.var.symbol_columns) or 'none'}; Ensembl columns: "
            f"{', '.join(self.var.ensembl_columns) or 'none'}",
            "",
            "## obs columns",
            "",
            "| column | dtype | unique | missing | sampled values |",
            "|---|---|---|---|---|",
        ]
        for c in self.obs:
            vals = ", ".join(f"`{v}`" for v in c.sampled_values[:8]).replace("|", "\\|")
            lines.append(f"| `{c.name}` | {c.dtype} | {c.n_unique} | {c.n_missing} | {vals} |")
        return "\n".join(lines) + "\n"


def check_h5ad_file(path: Path) -> None:
    """Fail early, with a useful message, on files that are not HDF5 at all."""
    if not path.exists():
        raise InputError("file not found", where=str(path), fix="check the path")
    if path.is_dir():
        raise InputError("is a directory, not a file", where=str(path), fix="pass the .h5ad file itself")
    if path.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)", where=str(path), fix="re-export or re-download the dataset")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head != HDF5_SIGNATURE:
        hint = ""
        if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
            hint = " (it looks like text, e.g. a CSV renamed to .h5ad)"
        raise InputError(
            f"not an HDF5/.h5ad file{hint}",
            where=str(path),
            fix="convert it to AnnData first, e.g. anndata.read_csv(...).write_h5ad(...)",
        )


def open_h5ad(path: Path) -> h5py.File:
    check_h5ad_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"cannot be read as HDF5 ({e})", where=str(path), fix="the file may be truncated; re-export it") from None
    if "X" not in f or "obs" not in f or "var" not in f:
        f.close()
        raise InputError(
            "HDF5 file without the AnnData groups X, obs and var",
            where=str(path),
            fix="write it with anndata (adata.write_h5ad)",
        )
    return f


def read_obs_var_backed(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """obs and var through anndata's backed mode: X stays on disk, and legacy layouts (obs as a
    structured array, categories in uns) are decoded by anndata itself."""
    import warnings

    import anndata as ad

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = ad.read_h5ad(path, backed="r")
        obs, var = a.obs.copy(), a.var.copy()
        a.file.close()
    except Exception as e:  # anndata raises many types for malformed files
        raise InputError(f"obs/var cannot be read ({type(e).__name__}: {e})", where=str(path),
                         fix="re-export it with anndata (adata.write_h5ad)") from None
    return obs, var


def x_shape(xnode) -> tuple[int, int]:
    if isinstance(xnode, h5py.Dataset):
        return tuple(int(s) for s in xnode.shape)  # type: ignore[return-value]
    for key in ("shape", "h5sparse_shape"):  # the second is the pre-0.7 anndata layout
        if key in xnode.attrs:
            return tuple(int(s) for s in xnode.attrs[key])  # type: ignore[return-value]
    raise InputError("X has no recorded shape", where="X", fix="re-export the file with anndata")


def sparse_format(xnode) -> str:
    enc = xnode.attrs.get("encoding-type", None) or xnode.attrs.get("h5sparse_format", "csr")
    enc = enc.decode() if isinstance(enc, bytes) else str(enc)
    return "csc_matrix" if enc.startswith("csc") else "csr_matrix"


def fingerprint_x(xnode, chunk_nnz: int | None = None) -> XFingerprint:
    """Stream X once and collect the statistics; never holds more than CHUNK_NNZ values (and
    works in X's own dtype: no float64 copy of the data)."""
    chunk_nnz = chunk_nnz or CHUNK_NNZ
    n_cells, n_genes = x_shape(xnode)
    total = n_cells * n_genes
    st = {"mn": np.inf, "mx": -np.inf, "s": 0.0, "nnz": 0, "nonint": 0, "nonfinite": 0, "neg": 0}
    cell_sums = np.zeros(n_cells, dtype=np.float64)
    # per-gene sum and sum of squares: a gene that never varies tells nothing (no-variance input)
    gene_sum = np.zeros(n_genes, dtype=np.float64)
    gene_sq = np.zeros(n_genes, dtype=np.float64)

    def consume(vals: np.ndarray) -> None:
        # cache-sized pieces: several passes over each piece cost about one pass over memory
        for i in range(0, vals.size, PIECE):
            consume_piece(vals[i:i + PIECE])

    def consume_piece(vals: np.ndarray) -> None:
        if vals.size == 0:
            return
        if vals.dtype.kind in "iub" or np.isfinite(vals).all():
            v = vals
        else:
            finite = np.isfinite(vals)
            bad = vals.size - int(np.count_nonzero(finite))
            st["nonfinite"] += bad
            v = vals[finite]
            if v.size == 0:
                return
        lo, hi = v.min(), v.max()
        st["mn"], st["mx"] = min(st["mn"], float(lo)), max(st["mx"], float(hi))
        st["s"] += float(np.sum(v, dtype=np.float64))
        st["nnz"] += int(np.count_nonzero(v))
        if lo < 0:
            st["neg"] += int(np.count_nonzero(v < 0))
        if v.dtype.kind == "f" and st["nonint"] == 0:  # one non-integer value settles it
            ints = v.astype(np.int32 if max(abs(float(lo)), abs(float(hi))) < 2**31 - 1 else np.int64)
            st["nonint"] += int(np.count_nonzero(v != ints))

    if isinstance(xnode, h5py.Dataset):
        storage = "dense"
        dtype = str(xnode.dtype)
        rows = max(1, chunk_nnz // max(n_genes, 1))
        for start in range(0, n_cells, rows):
            block = np.asarray(xnode[start:start + rows])
            consume(block.ravel())
            fin = np.where(np.isfinite(block), block, 0).astype(np.float64)
            cell_sums[start:start + rows] = fin.sum(axis=1)
            gene_sum += fin.sum(axis=0)
            gene_sq += (fin * fin).sum(axis=0)
    else:
        storage = sparse_format(xnode)
        data, indptr = xnode["data"], np.asarray(xnode["indptr"][:], dtype=np.int64)
        dtype = str(data.dtype)
        n_data = int(data.shape[0])
        for start in range(0, n_data, chunk_nnz):
            chunk = np.asarray(data[start:start + chunk_nnz])
            bad_before = st["nonfinite"]
            consume(chunk)
            # a float64 copy of a whole chunk would cost more memory than X itself: a copy only
            # when non-finite values must be zeroed, and per-gene sums piece by piece
            fin = chunk if st["nonfinite"] == bad_before else np.where(np.isfinite(chunk), chunk, 0)
            if storage == "csr_matrix":
                gidx = np.asarray(xnode["indices"][start:start + chunk_nnz])
                for i in range(0, len(fin), PIECE):
                    piece, g = fin[i:i + PIECE], gidx[i:i + PIECE]
                    gene_sum += np.bincount(g, weights=piece, minlength=n_genes)
                    gene_sq += np.bincount(g, weights=np.square(piece, dtype=np.float64), minlength=n_genes)
            if storage == "csr_matrix" and n_data <= chunk_nnz:
                nonempty = np.flatnonzero(np.diff(indptr) > 0)
                if len(nonempty):  # one chunk: per-row sums in X's dtype, as scanpy computes them
                    cell_sums[nonempty] = np.add.reduceat(chunk, indptr[:-1][nonempty])
            elif storage == "csr_matrix":
                lo = np.clip(indptr[:-1] - start, 0, len(chunk))
                hi = np.clip(indptr[1:] - start, 0, len(chunk))
                rows = np.flatnonzero(hi > lo)
                if len(rows):
                    # consecutive non-empty rows tile the chunk, so reduceat sums each row's slice
                    cell_sums[rows] += np.add.reduceat(chunk, lo[rows], dtype=np.float64)
            else:  # csc: column-major; rows come from indices
                idx = np.asarray(xnode["indices"][start:start + chunk_nnz])
                np.add.at(cell_sums, idx, chunk.astype(np.float64))
                cols = np.searchsorted(indptr, np.arange(start, start + len(chunk)), side="right") - 1
                gene_sum += np.bincount(cols, weights=fin, minlength=n_genes)
                gene_sq += np.bincount(cols, weights=np.square(fin, dtype=np.float64), minlength=n_genes)
        if n_data < total:  # implicit zeros
            st["mn"], st["mx"] = min(st["mn"], 0.0), max(st["mx"], 0.0)
    mn, mx, s, nnz, nonint, nonfinite, neg = (st[k] for k in ("mn", "mx", "s", "nnz", "nonint", "nonfinite", "neg"))
    if total == 0:
        mn = mx = 0.0
    is_int = nonint == 0
    mean = s / total if total else 0.0
    sums = cell_sums if n_cells else np.zeros(1)
    var = gene_sq / max(n_cells, 1) - (gene_sum / max(n_cells, 1)) ** 2
    varying = int(np.count_nonzero(var > 1e-12 * np.maximum(1.0, gene_sq / max(n_cells, 1))))
    scale, reason = scale_of(is_int, float(mx), neg, float(np.median(sums)), n_genes)
    raw = scale == "counts"
    log = scale == "log"
    return XFingerprint(
        storage=storage, dtype=dtype, min=float(mn), max=float(mx), mean=float(mean),
        sparsity=float(1 - nnz / total) if total else 1.0, is_integer=is_int,
        n_nonfinite=nonfinite, n_negative=neg,
        cell_sum_min=float(sums.min()), cell_sum_median=float(np.median(sums)), cell_sum_max=float(sums.max()),
        looks_raw_counts=raw, looks_log_normalised=log, reason=reason, scale=scale, genes_varying=varying,
    )


SCALE_WORDS = {"counts": "raw counts", "log": "log-normalised", "normalised": "normalised, not logged",
               "log-twice": "logged twice", "zero": "all zero", "scaled": "scaled (negative values)"}
LOG_MAX = 30.0  # log1p of any real count matrix stays below this
# log1p(log1p(x)) of log-normalised data tops out near 2.3 (log1p(9) = 2.30); single-logged data,
# even 50 genes of it (the GEARS subset), reach past 2.6
LOGGED_TWICE_MAX = 2.4
LOGGED_TWICE_MIN_GENES = 100  # a handful of genes logged once can stay below it (toy matrices)


def scale_of(is_int: bool, mx: float, neg: int, median_cell_sum: float, n_genes: int = 0) -> tuple[str, str]:
    """(scale, why): counts, log, normalised (CP10k/CPM/TPM: unlogged, non-integer), log-twice,
    zero. Negative values are judged elsewhere (scaled data are refused)."""
    if mx <= 0:
        return "zero", "every value is 0: no expression measured"
    if is_int and neg == 0:
        return "counts", f"all values are whole numbers up to {mx:.0f}: raw counts, to be normalised"
    if neg:
        return "scaled", f"negative values (centred or scaled data), max {mx:.3g}"
    if mx < LOGGED_TWICE_MAX and n_genes >= LOGGED_TWICE_MIN_GENES:
        return "log-twice", (f"non-integer values with max {mx:.3g} < {LOGGED_TWICE_MAX}: log1p applied twice "
                             "(log-normalised data reach 3 or more)")
    if mx < LOG_MAX:
        return "log", f"non-integer values with max {mx:.3g} < {LOG_MAX:g}: already log-normalised, not logged again"
    if 0.5e4 <= median_cell_sum <= 2e4:
        kind = f"CP10k-like (median cell sum {median_cell_sum:.4g})"
    elif 0.5e6 <= median_cell_sum <= 2e6:
        kind = f"CPM/TPM-like (median cell sum {median_cell_sum:.4g})"
    else:
        kind = f"non-integer, not logged (median cell sum {median_cell_sum:.4g})"
    return "normalised", (f"non-integer values up to {mx:.4g} > {LOG_MAX:g}: {kind}; "
                          "rescaled to 1e4 per cell and log1p-transformed")


class _InMemoryCSR:
    """Lets fingerprint_x read an in-memory CSR matrix the way it reads the HDF5 group."""

    def __init__(self, X):
        self.attrs = {"encoding-type": "csr_matrix", "shape": X.shape}
        self._parts = {"data": X.data, "indptr": X.indptr, "indices": X.indices}

    def __getitem__(self, key):
        return self._parts[key]


def fingerprint_matrix(X) -> XFingerprint:
    """Fingerprint of an in-memory matrix (dense arrays are converted to CSR first); the data
    are already in memory, so they are read as one chunk."""
    import scipy.sparse as sp

    X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    return fingerprint_x(_InMemoryCSR(X), chunk_nnz=max(1, X.nnz))


def id_type(values: pd.Index | pd.Series) -> IdType:
    vals = pd.Series(values).astype(str)
    if len(vals) == 0:
        return "other"
    ens = vals.str.match(ENSEMBL_RE.pattern).mean()
    if ens > 0.95:
        return "ensembl"
    sym = vals.str.match(SYMBOL_RE.pattern).mean()
    if ens > 0.05:
        return "mixed"
    return "symbol" if sym > 0.8 else "other"


def profile_var(var: pd.DataFrame) -> VarProfile:
    sym_cols, ens_cols = [], []
    for c in var.columns:
        col = var[c]
        if col.dtype.kind in "biufc" or col.dtype == bool:
            continue
        t = id_type(col.dropna())
        if t == "ensembl":
            ens_cols.append(c)
        elif t == "symbol" and col.nunique() > 0.5 * len(col):
            sym_cols.append(c)
    # names that announce symbols come first
    sym_cols.sort(key=lambda c: 0 if re.search(r"symbol|name|gene", c, re.I) else 1)
    return VarProfile(
        index_type=id_type(var.index),
        index_examples=[str(v) for v in var.index[:8]],
        index_unique=bool(var.index.is_unique),
        symbol_columns=sym_cols,
        ensembl_columns=ens_cols,
        columns=[str(c) for c in var.columns],
    )


def profile_obs(obs: pd.DataFrame) -> list[ObsColumn]:
    out = []
    for c in obs.columns:
        col = obs[c]
        numeric = col.dtype.kind in "biuf"
        vc = col.astype("object").value_counts(dropna=True)
        out.append(ObsColumn(
            name=str(c), dtype=str(col.dtype), n_unique=int(col.nunique(dropna=True)),
            n_missing=int(col.isna().sum()),
            sampled_values=[str(v) for v in vc.index[:N_SAMPLED_VALUES]],
            top_counts={str(k): int(v) for k, v in vc.iloc[:N_SAMPLED_VALUES].items()},
            numeric=bool(numeric),
        ))
    return out


def group_keys(f: h5py.File, name: str) -> list[str]:
    node = f.get(name)
    if node is None:
        return []
    if isinstance(node, h5py.Dataset):  # legacy layout: a structured array
        return sorted(node.dtype.names or [])
    return sorted(node.keys())


def audit_h5ad(path: str | Path) -> AuditReport:
    path = Path(path)
    with open_h5ad(path) as f:
        n_cells, n_genes = x_shape(f["X"])
        if n_cells == 0 or n_genes == 0:
            raise InputError(f"no data: {n_cells} cells x {n_genes} genes", where=str(path),
                             fix="check that the right file was exported")
        try:
            x = fingerprint_x(f["X"])
        except (OSError, KeyError, ValueError, TypeError) as e:  # h5py's errors for damaged data
            raise InputError(f"X cannot be read ({type(e).__name__}: {str(e)[:120]})", where=f"{path} X",
                             fix="the file is truncated or corrupted; re-export or re-download it") from None
        layers, obsm = group_keys(f, "layers"), group_keys(f, "obsm")
    obs, var = read_obs_var_backed(path)
    return AuditReport(
        path=str(path), name=path.stem, n_cells=n_cells, n_genes=n_genes, x=x,
        obs=profile_obs(obs), obs_names_unique=bool(obs.index.is_unique),
        obs_names_examples=[str(v) for v in obs.index[:5]],
        var=profile_var(var), layers=layers, obsm=obsm,
    )


def write_audit(report: AuditReport, folder: Path) -> Path:
    """FOLDER/<name>.md and FOLDER/<name>.json (atomic); returns the JSON's path."""
    json_path = Path(folder) / f"{report.name}.json"
    atomic.write_text(json_path.with_suffix(".md"), report.to_markdown())
    atomic.write_text(json_path, report.model_dump_json(indent=2))
    return json_path


def describes(report: AuditReport | None, path: Path, n_cells: int, n_genes: int) -> bool:
    """Whether an audit made earlier (at the door, by the DataAuditor) is of this file as read now:
    then it is carried, not made again."""
    return (report is not None and Path(report.path).resolve() == Path(path).resolve()
            and (report.n_cells, report.n_genes) == (n_cells, n_genes))
