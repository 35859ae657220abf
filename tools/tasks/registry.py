"""The task kinds, by the name ``--task`` uses. Everything that depends on the kind asks here."""

from __future__ import annotations

from harmonycell.tools.errors import InputError
from harmonycell.tools.tasks import unseen_cell_context, unseen_combination, unseen_perturbation
from harmonycell.tools.tasks.base import Kind

KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    if kind.name in KINDS and KINDS[kind.name] is not kind:
        raise ValueError(f"task kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    KINDS.pop(name, None)


def task_kind(name) -> Kind:
    """The kind called ``name`` (a string or a ``schema.TaskKind``)."""
    key = str(getattr(name, "value", name))
    try:
        return KINDS[key]
    except KeyError:
        raise InputError(f"unknown task kind {key!r}", where="--task",
                         fix=f"use one of: {', '.join(KINDS)}") from None


for _module in (unseen_perturbation, unseen_cell_context, unseen_combination):
    register(_module.KIND)
