"""Validation and repair of a MappingSpec against the data it is meant for.

A spec (builtin or from an LLM) is never applied blindly: every field must evaluate on the
data, with the right kind of values, and the result must have at least one control and one
perturbed cell. A failing field is replaced by the builtin policy's inference for that field;
if that fails too the spec is rejected with a message that says what and where.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel

from harmonycell.tools.data.apply import apply_obs, as_bool_series, field_values, gene_ids
from harmonycell.tools.data.audit import AuditReport
from harmonycell.tools.errors import HarmonyCellError, SpecError
from harmonycell.tools.data.mapping import SPEC_FIELDS, MappingSpec, infer_mapping

# fields re-inferred together: the label column and how its values are read
LABEL_GROUP = ("condition_name", "is_control", "control_labels", "unknown_labels", "combo_delimiters", "label_aliases")
NUMERIC_FACTS = ("is_already_log1p", "normalization_required", "target_sum")
VAR_FACTS = ("var_index_type", "gene_symbol_column", "gene_id_column")


class Repair(BaseModel):
    field: str  # the field that failed
    problem: str
    action: str  # e.g. "re-inferred by the builtin policy"
    replaced: list[str] = []  # spec entries taken from the builtin policy


def field_problem(spec: MappingSpec, name: str, obs: pd.DataFrame) -> str | None:
    fm = spec.field(name)
    try:
        values = field_values(fm, obs, name)
        if values is None:
            return "condition_name is null" if name == "condition_name" else None
        if len(values) != len(obs):
            return f"yields {len(values)} values for {len(obs)} cells"
        if name == "is_control":
            as_bool_series(values, name)
        if name == "dose":
            num = pd.to_numeric(values, errors="coerce")
            bad = num.isna() & values.notna()
            if bad.any():
                return f"dose is not numeric (e.g. {values[bad].iloc[0]!r})"
            if (num.dropna() < 0).any():
                return "dose has negative values"
        if name == "condition_name" and values.isna().all():
            return "every label is missing"
    except HarmonyCellError as e:
        return e.one_line()
    return None


def outcome_problem(spec: MappingSpec, obs: pd.DataFrame) -> str | None:
    try:
        applied = apply_obs(spec, obs)
    except HarmonyCellError as e:
        return e.one_line()
    kept = applied.kept
    n_ctrl = int(kept["is_control"].sum())
    n_pert = int((~kept["is_control"]).sum())
    if n_ctrl == 0:
        return "zero control cells"
    if n_pert == 0:
        return "zero perturbed cells"
    return None


def validate_and_repair(spec: MappingSpec, audit: AuditReport, obs: pd.DataFrame, var: pd.DataFrame
                        ) -> tuple[MappingSpec, list[Repair]]:
    repairs: list[Repair] = []
    builtin_cache: list[MappingSpec] = []

    def builtin() -> MappingSpec:
        if not builtin_cache:
            builtin_cache.append(infer_mapping(audit, obs, dataset_id=spec.dataset_id, var=var))
        return builtin_cache[0]

    def replace(names: tuple[str, ...], problem: str, failed: str) -> None:
        nonlocal spec
        ref = builtin()
        policy = spec.policy if spec.policy.endswith("+builtin-repair") else f"{spec.policy}+builtin-repair"
        spec = spec.model_copy(update={**{n: getattr(ref, n) for n in names}, "policy": policy})
        repairs.append(Repair(field=failed, problem=problem, action="re-inferred by the builtin policy",
                              replaced=list(names)))

    # 1. fields one by one
    for name in SPEC_FIELDS:
        problem = field_problem(spec, name, obs)
        if problem is None:
            continue
        try:
            group = LABEL_GROUP if name in ("condition_name", "is_control") else (name,)
            replace(group, problem, name)
        except HarmonyCellError as e:
            raise SpecError(f"field {name!r} fails ({problem}) and cannot be re-inferred ({e.what})",
                            where=f"{audit.path} mapping", fix=e.fix or "hand in a corrected mapping spec") from None
        again = field_problem(spec, name, obs)
        if again is not None:
            raise SpecError(f"field {name!r} fails: {again}", where=f"{audit.path} mapping",
                            fix="correct the mapping spec for this field")

    # 2. the whole: at least one control and one perturbed cell
    problem = outcome_problem(spec, obs)
    if problem is not None:
        original = problem
        try:
            ref = builtin()
        except HarmonyCellError as e:
            raise SpecError(f"{original}, and the builtin policy finds no alternative ({e.what})",
                            where=audit.path, fix=e.fix) from None
        if any(getattr(ref, n) != getattr(spec, n) for n in LABEL_GROUP):
            replace(LABEL_GROUP, problem, "condition_name")
            problem = outcome_problem(spec, obs)
        if problem is not None:
            col = spec.condition_name.source_key or spec.condition_name.expression
            fix = ("label control cells with a control word (control, ctrl, non-targeting, DMSO, vehicle, ...)"
                   if "control" in problem else "the file needs perturbed cells besides the controls")
            raise SpecError(f"{problem} after mapping the perturbation label {col!r} "
                            f"(control labels: {', '.join(spec.control_labels) or 'none'})",
                            where=audit.path, fix=fix)

    # 3. numerical facts must agree with the fingerprint: never log twice, never leave counts raw
    x = audit.x
    if spec.normalization_required and not x.needs_normalising():
        repairs.append(Repair(field="normalization_required", problem=f"spec normalises data that are already log-normalised ({x.reason})",
                              action="set from the X fingerprint"))
        spec = spec.model_copy(update={"normalization_required": False, "is_already_log1p": True})
    elif not spec.normalization_required and x.needs_normalising():
        repairs.append(Repair(field="normalization_required", problem=f"spec leaves unlogged values unnormalised ({x.reason})",
                              action="set from the X fingerprint"))
        spec = spec.model_copy(update={"normalization_required": True, "is_already_log1p": False})
    if not np.isfinite(spec.target_sum) or spec.target_sum <= 0:
        repairs.append(Repair(field="target_sum", problem=f"target_sum {spec.target_sum} is not positive", action="set to 1e4"))
        spec = spec.model_copy(update={"target_sum": 1e4})

    # 4. var columns
    try:
        gene_ids(spec, var)
    except HarmonyCellError as e:
        replace(VAR_FACTS, e.one_line(), "var_index_type")
    return spec, repairs
