"""The deterministic engine: execute a MappingSpec over one input's obs and var.

Labels are handled once per distinct value (categories), not once per cell, so a 100k-cell
file costs a few vectorised passes. Nothing here guesses: every decision is in the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harmonycell.tools.errors import SpecError
from harmonycell.tools.data.expr import evaluate
from harmonycell.tools.data.labels import UNKNOWN_LABELS
from harmonycell.tools.data.audit import ENSEMBL_RE
from harmonycell.tools.data.mapping import (
    PERT_TYPE_WORDS,
    FieldMapping,
    MappingSpec,
    normalise_token,
    split_label,
)
from harmonycell.tools.schema import CONTROL_LABEL, PERT_TYPES, canonical_condition

UNKNOWN = "unknown"


@dataclass
class AppliedObs:
    """Canonical obs of one input before merging, plus what was dropped and why."""

    obs: pd.DataFrame  # all input cells; 'keep' says which survive
    keep: np.ndarray
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def kept(self) -> pd.DataFrame:
        return self.obs.loc[self.keep]


def field_values(fm: FieldMapping, obs: pd.DataFrame, name: str) -> pd.Series | None:
    """Per-cell values of one field, or None for a null field (the engine's default applies)."""
    if fm.type == "null":
        return None
    if fm.type == "constant":
        return pd.Series([fm.value] * len(obs), index=obs.index, dtype=object)
    if fm.type == "direct":
        if not fm.source_key or fm.source_key not in obs.columns:
            raise SpecError(f"field {name!r} copies column {fm.source_key!r}, which does not exist",
                            where=name, fix=f"use one of: {', '.join(map(str, obs.columns))}")
        return obs[fm.source_key]
    if not fm.expression:
        raise SpecError(f"logic field {name!r} has no expression", where=name, fix="give an expression or make it null")
    return evaluate(fm.expression, obs)


def per_unique(values: pd.Series, fn) -> pd.Series:
    """Apply ``fn`` once per distinct value (NaN passed as None), broadcast back to cells."""
    cat = values.astype("category") if values.dtype.name != "category" else values
    cats = list(cat.cat.categories)
    mapped = [fn(c) for c in cats]
    codes = cat.cat.codes.to_numpy()
    table = np.array(mapped + [fn(None)], dtype=object)
    return pd.Series(table[np.where(codes < 0, len(cats), codes)], index=values.index, dtype=object)


def label_parser(spec: MappingSpec):
    ctrl = {normalise_token(c) for c in spec.control_labels}
    unknown = {normalise_token(u) for u in spec.unknown_labels} | UNKNOWN_LABELS
    aliases = {normalise_token(k): v for k, v in spec.label_aliases.items()}

    def parse(v) -> str | None:
        """Canonical condition of a raw label; None when the perturbation is unknown."""
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        s = str(v).strip()
        if normalise_token(s) in unknown:
            return None
        if normalise_token(s) in ctrl:
            return CONTROL_LABEL
        parts = split_label(s, spec.combo_delimiters)
        # guides/tokens that are controls (GEARS 'A+ctrl', a second non-targeting guide) drop out
        perts = [aliases.get(normalise_token(p), p) for p in parts if normalise_token(p) not in ctrl]
        perts = [p for p in perts if normalise_token(p) not in unknown]
        return canonical_condition(perts)

    return parse


def pert_type_word(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "other"
    s = str(v).strip()
    if s.lower() in PERT_TYPES:
        return s.lower()
    for rx, kind in PERT_TYPE_WORDS:
        if rx.search(s):
            return kind
    return "other"


def as_bool_series(v: pd.Series, name: str) -> pd.Series:
    if v.dtype == bool:
        return v
    if v.dtype.kind in "iuf":
        vals = v.dropna().unique()
        if set(np.asarray(vals, dtype=float)) <= {0.0, 1.0}:
            return v.fillna(0).astype(bool)
    low = v.astype(str).str.strip().str.lower()
    truthy, falsy = {"true", "1", "yes", "t", "y"}, {"false", "0", "no", "f", "n", "nan", "none"}
    bad = ~low.isin(truthy | falsy)
    if bad.any():
        raise SpecError(f"field {name!r} must be true/false but has values like {low[bad].iloc[0]!r}",
                        where=name, fix="compare the column with a control label, e.g. obs['col'] == 'ctrl'")
    return low.isin(truthy)


def text_field(values: pd.Series | None, default: str) -> pd.Series | str:
    if values is None:
        return default
    return per_unique(values, lambda v: default if v is None or (isinstance(v, float) and np.isnan(v))
                      or str(v).strip() == "" else str(v).strip())


def apply_obs(spec: MappingSpec, obs: pd.DataFrame) -> AppliedObs:
    """Canonical obs for every cell of one input (see AppliedObs.keep for the survivors)."""
    n = len(obs)
    idx = obs.index
    raw = field_values(spec.condition_name, obs, "condition_name")
    assert raw is not None or spec.condition_name.type == "null"
    if raw is None:
        raise SpecError("condition_name is null: no perturbation label", where="condition_name",
                        fix="map condition_name to the column naming each cell's perturbation")
    cond = per_unique(raw, label_parser(spec))
    unknown = cond.isna().to_numpy()
    is_ctrl_f = field_values(spec.is_control, obs, "is_control")
    if is_ctrl_f is None:
        is_ctrl = (cond == CONTROL_LABEL).to_numpy()
        conflict = np.zeros(n, bool)
    else:
        is_ctrl = as_bool_series(is_ctrl_f, "is_control").to_numpy()
        # a flagged control needs no label (schemas that leave the target empty for controls)
        unknown = unknown & ~is_ctrl
        # a cell flagged perturbed whose label holds only control tokens: nothing to learn from
        conflict = ~is_ctrl & (cond == CONTROL_LABEL).to_numpy() & ~unknown
    cond = cond.where(~pd.Series(is_ctrl, index=idx), CONTROL_LABEL)
    keep = ~unknown & ~conflict
    dropped = {}
    if unknown.any():
        dropped["unknown perturbation (NaN/unassigned label)"] = int(unknown.sum())
    if conflict.any():
        dropped["flagged perturbed but labelled control"] = int(conflict.sum())

    pt = field_values(spec.pert_type, obs, "pert_type")
    pert_type = per_unique(pt, pert_type_word) if pt is not None else pd.Series("other", index=idx, dtype=object)
    pert_type = pert_type.where(~pd.Series(is_ctrl, index=idx), "control")
    # a perturbed cell never carries the 'control' type
    pert_type = pert_type.where(~(pert_type.eq("control") & ~pd.Series(is_ctrl, index=idx)), "other")

    out = pd.DataFrame(index=idx)
    ct = field_values(spec.cell_type, obs, "cell_type")
    if ct is not None and spec.cell_type.type != "constant":
        # a missing cell type is not a cell type: such cells never form a context of their own
        missing = per_unique(ct, lambda v: v is None or (isinstance(v, float) and np.isnan(v))
                             or normalise_token(v) in UNKNOWN_LABELS).to_numpy(dtype=bool)
        if missing.any() and not missing.all():
            newly = missing & keep
            if newly.any():
                dropped["missing cell type (NaN/unknown)"] = int(newly.sum())
            keep = keep & ~missing
    out["cell_type"] = text_field(ct, UNKNOWN)
    out["batch_id"] = text_field(field_values(spec.batch_id, obs, "batch_id"), spec.dataset_id)
    out["donor_id"] = text_field(field_values(spec.donor_id, obs, "donor_id"), UNKNOWN)
    out["pert_type"] = pert_type.astype(str)
    out["is_control"] = is_ctrl.astype(bool)
    out["condition_name"] = cond.fillna("").astype(str)
    out["dataset_id"] = spec.dataset_id
    dose = field_values(spec.dose, obs, "dose")
    if dose is None:
        out["dose"] = np.nan
    else:
        try:
            out["dose"] = pd.to_numeric(dose, errors="raise").astype(float).to_numpy()
        except (TypeError, ValueError):
            raise SpecError("field 'dose' is not numeric", where="dose",
                            fix="parse the number out of the text, e.g. obs['t'].str.extract('([0-9.]+)').astype('float')") from None
    return AppliedObs(out, keep, dropped)


@dataclass
class GeneIds:
    symbol: pd.Series  # per var row
    ensembl: pd.Series  # per var row; None where unknown
    id_type: str  # what the original index held


def gene_ids(spec: MappingSpec, var: pd.DataFrame) -> GeneIds:
    index = pd.Series(var.index.astype(str), index=var.index)
    ens_rx = ENSEMBL_RE

    def col(name: str | None) -> pd.Series | None:
        if name is None:
            return None
        if name not in var.columns:
            raise SpecError(f"var column {name!r} does not exist", where="gene_symbol_column/gene_id_column",
                            fix=f"use one of: {', '.join(map(str, var.columns)) or '(none)'}")
        v = var[name].astype(object)
        return v.astype(str).where(v.notna(), None)

    sym_col, id_col = col(spec.gene_symbol_column), col(spec.gene_id_column)
    index_is_ens = index.str.match(ens_rx.pattern)
    if sym_col is not None:
        symbol = sym_col.where(sym_col.notna() & (sym_col != ""), index)
    else:
        symbol = index.where(~index_is_ens, None) if spec.var_index_type == "mixed" else index
        symbol = symbol.where(symbol.notna(), index)
    # vectorised: 20k+ genes, no per-gene Python calls
    ens = index.str.replace(r"\.\d+$", "", regex=True).where(index_is_ens, None)
    if id_col is not None:
        ok = id_col.fillna("").str.match(ens_rx.pattern)
        ens = ens.where(ens.notna() | ~ok, id_col.fillna("").str.replace(r"\.\d+$", "", regex=True))
    return GeneIds(symbol=symbol.astype(str), ensembl=ens, id_type=spec.var_index_type)
