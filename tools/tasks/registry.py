"""The task kinds, by the name ``--task`` uses. Everything that depends on the kind asks here:
a kind is added by its own module and one ``register`` call, nothing else."""

from __future__ import annotations

from harmonycell.tools.errors import InputError
from harmonycell.tools.tasks import unseen_cell_context, unseen_combination, unseen_perturbation
from harmonycell.tools.tasks.base import Kind

KINDS: dict[str, Kind] = {}  # in registration order: the order kinds are listed to a person
REQUIRED = ("name", "unit", "description")


def register(kind: Kind) -> Kind:
    missing = [a for a in REQUIRED if not getattr(kind, a, "")]
    if missing:
        raise ValueError(f"task kind {type(kind).__name__} does not say its {', '.join(missing)}")
    if kind.name in KINDS and KINDS[kind.name] is not kind:
        raise ValueError(f"task kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    KINDS.pop(name, None)


def task_kind(name: str) -> Kind:
    """The kind called ``name``; an unknown name is refused with the registered ones."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown task kind {name!r}", where="--task",
                         fix=f"use one of: {', '.join(KINDS)}") from None


def kinds() -> list[Kind]:
    return list(KINDS.values())


def kind_names() -> str:
    """The registered names, for a person: ``a | b | c``."""
    return " | ".join(KINDS)


def by_cue_priority() -> list[Kind]:
    """The order the chat tries the kinds' cues in (``Kind.cue_priority``, then registration)."""
    return sorted(KINDS.values(), key=lambda k: k.cue_priority)


def hold_out_kind() -> Kind:
    """The kind a named hold-out ("hold out B cells") asks for: the first that takes one."""
    for kind in KINDS.values():
        if kind.takes_hold_out:
            return kind
    raise InputError("no registered task kind holds out named units", where="hold out",
                     fix="drop the hold-out")


for _module in (unseen_perturbation, unseen_cell_context, unseen_combination):
    register(_module.KIND)

DEFAULT_KIND = unseen_perturbation.KIND.name  # what --task is when none is said
