"""Score a predictions file written by the sandbox, on the host (SPEC section 8).

The held-out targets come from the canonical AnnData, which stays on the host; the sandbox only
wrote ``pred_<split>.npy``. The file is read once: the sha256 recorded in the report is the hash
of exactly the bytes that were scored (no window between hashing and loading), so the Judge can
check that the scored predictions are the ones the sandbox wrote.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from anndata import AnnData

from harmonycell.tools.errors import PredictionError
from harmonycell.tools.evaluation.metrics import ScoreReport, score
from harmonycell.tools.evaluation.pseudobulk import Targets, targets_for
from harmonycell.tools.data.taskdata import Query


def as_queries(items: Iterable[Any]) -> list[Query]:
    """Queries from ``Query`` objects or meta.json dicts ``{"condition", "context"}``."""
    out = []
    for q in items:
        if isinstance(q, Query):
            out.append(q)
        elif isinstance(q, dict) and {"condition", "context"} <= set(q):
            out.append(Query(str(q["condition"]), str(q["context"])))
        else:
            raise PredictionError(f"cannot read query {q!r}", where="expected queries",
                                  fix="pass Query objects or meta.json query dicts")
    return out


def load_predictions(path: str | Path, max_bytes: int | None = None) -> tuple[np.ndarray, str]:
    """(array, sha256 of the file's bytes); refuses pickles, unreadable and oversized files."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise PredictionError(f"file is {size} bytes, more than a (queries, genes) float64 "
                                  f"array needs ({max_bytes})", where=str(path),
                                  fix="save only the (queries, genes) prediction matrix")
        data = path.read_bytes()
    except OSError as exc:
        raise PredictionError(f"cannot read predictions ({exc.strerror})", where=str(path),
                              fix="the node must write its predictions before it is scored") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise PredictionError(f"not a plain numeric .npy array ({exc})", where=str(path),
                              fix="save a float32 array with np.save (no pickled objects)") from None
    except Exception as exc:  # truncated or not .npy at all
        raise PredictionError(f"not a readable .npy file ({type(exc).__name__}: {exc})",
                              where=str(path), fix="save the predictions with np.save") from None
    if not isinstance(arr, np.ndarray):
        raise PredictionError("file holds several arrays (.npz), expected one", where=str(path),
                              fix="save a single (queries, genes) array with np.save")
    return arr, digest


def score_prediction_file(adata: AnnData, split: str, path: str | Path,
                          expected_queries: Sequence[Any] | None = None,
                          genes: Sequence[str] | None = None,
                          targets: Targets | None = None) -> ScoreReport:
    """Validate and score ``path`` (a (queries, genes) .npy) against ``split`` of ``adata``.

    ``expected_queries`` / ``genes`` are what the sandbox was asked to predict (meta.json); they
    must equal the host's own query and gene order, or nothing is scored. ``targets`` may be
    passed to reuse ``targets_for(adata, split)`` across many nodes."""
    t = targets if targets is not None else targets_for(adata, split)
    if t.split != split:
        raise PredictionError(f"targets are for split {t.split!r}, not {split!r}", where=str(path))
    # float64 of the right shape plus a generous header: anything larger is not a prediction
    pred, digest = load_predictions(path, max_bytes=8 * len(t.queries) * len(t.genes) + 65536)
    queries = as_queries(expected_queries) if expected_queries is not None else None
    try:
        report = score(t, pred, genes=genes, queries=queries)
    except PredictionError as exc:
        raise PredictionError(exc.what, where=str(path), fix=exc.fix) from None
    report.predictions_sha256 = digest
    report.predictions_path = str(path)
    return report
