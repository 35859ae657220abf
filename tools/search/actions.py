"""The hierarchical action space the Planner searches (SPEC section 4), as data.

A node of the search is named by an *action path*, one string used everywhere (CLI, transcript,
knowledge base)::

    discriminative/resnet
    discriminative/resnet/hparams:lr=3e-4,dropout=0.1
    generative/cvae/hparams:latent_dim=16/loss:huber
    discriminative/resnet/on:ridge

Level 1 is the paradigm, level 2 the backbone (which must belong to the paradigm), and every
further segment is a refinement (``hparams:k=v,...``, ``loss:NAME``, or ``on:SIMPLE``: the
network learns the residual on top of a closed-form model of the ``simple`` paradigm, fitted
first; only for a network that predicts ``x_ctrl + delta`` under the configured loss). A segment that names a
paradigm or backbone below level 2 would revert a decision already taken higher up the tree, so
the grammar rejects it: such a path cannot be constructed. Every error lists the valid choices at
the level where parsing failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from harmonycell.tools.errors import InputError
from harmonycell.tools.tasks.registry import task_kind

SEP = "/"
Target = Literal["config", "hparams"]  # where a parameter goes: training config or model info


@dataclass(frozen=True)
class Param:
    """One tunable value with its valid range (inclusive) and default."""

    name: str
    kind: Literal["float", "int"]
    low: float
    high: float
    default: float
    target: Target
    log: bool = False  # searched on a log scale (learning rates, weight decay)
    help: str = ""
    # how the Planner's menu moves this value one step: "scale" (x0.3, x3), "halve-double",
    # "step" (-1, +1), "dropout" (off / +0.2), "switch-on" (x10, or 1e-4 from 0); "" = not searched
    move: str = ""

    def parse(self, raw: str, where: str) -> float | int:
        try:
            value = float(raw)
        except ValueError:
            raise InputError(
                f"{self.name}={raw!r} is not a number", where=where,
                fix=f"give {self.name} a {self.kind} in [{fmt(self.low)}, {fmt(self.high)}]",
            ) from None
        if self.kind == "int":
            if not value.is_integer():
                raise InputError(f"{self.name}={raw} must be a whole number", where=where,
                                 fix=f"give an integer in [{fmt(self.low)}, {fmt(self.high)}]")
            value = int(value)
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise InputError(
                f"{self.name}={raw} is outside its valid range", where=where,
                fix=f"{self.name} must lie in [{fmt(self.low)}, {fmt(self.high)}] (default {fmt(self.default)})",
            )
        return value


def fmt(v: float) -> str:
    return f"{v:g}"


# Shared by every backbone. Defaults are sized so one node trains on the real tasks in about a
# minute on 2 CPU cores; early stopping (patience) usually ends training well before `epochs`.
COMMON_PARAMS: tuple[Param, ...] = (
    Param("lr", "float", 1e-5, 1e-1, 1e-3, "config", log=True, help="AdamW learning rate", move="scale"),
    Param("weight_decay", "float", 0.0, 1e-1, 1e-5, "config", help="AdamW weight decay", move="switch-on"),
    # epochs and patience bound a node's cost: set run-wide (--epochs), not searched
    Param("epochs", "int", 1, 500, 60, "config", help="maximum epochs (early stopping may end sooner)"),
    Param("batch_size", "int", 8, 4096, 128, "config", help="training batch size (drop_last)",
          move="halve-double"),
    Param("patience", "int", 1, 100, 8, "config", help="early-stopping patience in epochs"),
    Param("dropout", "float", 0.0, 0.9, 0.1, "hparams", help="dropout in hidden layers", move="dropout"),
    Param("width", "int", 16, 4096, 256, "hparams", help="hidden width", move="halve-double"),
    Param("depth", "int", 1, 12, 2, "hparams", help="number of hidden blocks", move="step"),
    Param("emb_dim", "int", 4, 1024, 64, "hparams", help="perturbation embedding size", move="halve-double"),
)

# Every loss the harness and the templates honour (harness.make_loss and _common.recon_loss
# know exactly these two; anything else would silently train on MSE, so it is not offered).
LOSSES: tuple[str, ...] = ("mse", "huber")


@dataclass(frozen=True)
class Backbone:
    name: str
    paradigm: str
    template: str  # module name in harmonycell.tools.search.model_templates
    description: str
    extra: tuple[Param, ...] = ()
    # shared parameters its template never reads: neither accepted in a path nor offered
    ignores: tuple[str, ...] = ()
    # x_ctrl + a delta head that starts at zero, so an untrained model predicts the control cell
    residual: bool = True
    # fitted in closed form (the harness calls fit(); no optimiser): a loss refinement means nothing
    closed_form: bool = False
    # the held-out unit (a task kind's ``inner_unit``: "context" or "condition") it can answer
    # better than a baseline by construction; empty: every task kind
    for_held_out: str = ""
    # may learn the residual on top of a closed-form model (``on:SIMPLE``): a residual network
    # with no loss or predict of its own, so its delta adds to the simple model's prediction
    on_simple: bool = False

    @property
    def params(self) -> dict[str, Param]:
        return {p.name: p for p in (*COMMON_PARAMS, *self.extra) if p.name not in self.ignores}


@dataclass(frozen=True)
class Paradigm:
    name: str
    description: str


PARADIGMS: dict[str, Paradigm] = {
    "simple": Paradigm("simple", "closed-form models on perturbation features, fitted in seconds"),
    "discriminative": Paradigm("discriminative", "deterministic f(x_ctrl, p) -> delta"),
    "generative": Paradigm("generative", "a distribution P(x | x_ctrl, p), scored on its mean"),
}

# what a closed-form model never reads: no optimiser, no epochs, no network
_NO_NETWORK = ("lr", "weight_decay", "batch_size", "patience", "dropout", "width", "depth", "emb_dim")

BACKBONES: dict[str, Backbone] = {b.name: b for b in (
    Backbone("ridge", "simple", "ridge",
             "ridge regression from the perturbation's features to its pseudo-bulk effect (Ahlmann-Eltze"
             " et al.'s linear model); the penalty is chosen on the inner split",
             # tuned on the inner split inside fit(), so not searched again
             extra=(Param("alpha", "float", 1e-4, 1e4, 1.0, "hparams", log=True,
                          help="ridge penalty relative to the features' scale (centre of the inner-split grid)"),),
             ignores=_NO_NETWORK, closed_form=True),
    Backbone("nearest-gene", "simple", "nearest_gene",
             "the similarity-weighted mean effect of the k training perturbations with the nearest features",
             extra=(Param("k", "int", 1, 100, 5, "hparams", help="neighbours averaged (centre of the grid)"),),
             ignores=_NO_NETWORK, closed_form=True),
    Backbone("nearest-context", "simple", "nearest_context",
             "each perturbation's effect in the k training contexts whose control profiles are nearest the"
             " query context's (a held-out cell type answers like the cell types it resembles)",
             extra=(Param("k", "int", 1, 8, 3, "hparams", help="contexts averaged (the inner split chooses)"),),
             # with one training context it is the train-mean shift: offered where contexts are held out
             ignores=_NO_NETWORK, closed_form=True, for_held_out="context"),
    Backbone("resnet", "discriminative", "resnet",
             "pre-norm residual MLP blocks over [control encoding, perturbation embedding]",
             on_simple=True),
    Backbone("gated-mlp", "discriminative", "gated_mlp",
             "MLP blocks whose hidden units are gated by the perturbation (GLU-style)",
             on_simple=True),
    Backbone("pathway-masked", "discriminative", "pathway_masked",
             "gene -> module -> gene layers masked by gene modules (co-expression or a gene-set file)",
             extra=(Param("n_modules", "int", 2, 500, 40, "hparams",
                          help="co-expression modules when no gene-set file is given", move="halve-double"),
                    Param("units_per_module", "int", 1, 64, 4, "hparams",
                          help="hidden units per module", move="halve-double")),
             ignores=("width",), on_simple=True),  # its hidden size is n_modules x units_per_module
    Backbone("attribute-decoder", "discriminative", "attribute_decoder",
             "one decoder over per-attribute embeddings (a noisy basal bottleneck of the control cell, the"
             " perturbation); the effect is its contrast between the perturbation and none (biolord's idea)",
             extra=(Param("basal_dim", "int", 1, 256, 8, "hparams",
                          help="size of the basal-state bottleneck", move="halve-double"),
                    Param("basal_noise", "float", 0.0, 5.0, 0.5, "hparams",
                          help="std of the training noise on the unit-scaled basal state", move="scale")),
             residual=False),
    Backbone("set-transformer", "discriminative", "set_transformer",
             "cells of one perturbation attend to each other: a set of control cells maps to a set of"
             " perturbed cells (STATE's idea); an energy distance between sets is a refinement",
             extra=(Param("energy_weight", "float", 0.0, 10.0, 0.0, "hparams",
                          help="weight of the energy distance between predicted and observed sets",
                          move="switch-on"),)),
    Backbone("cvae", "generative", "cvae",
             "conditional VAE: latent cell state, decoder conditioned on control + perturbation",
             extra=(Param("latent_dim", "int", 2, 256, 32, "hparams", help="latent size", move="halve-double"),
                    Param("beta", "float", 0.0, 10.0, 0.05, "hparams", help="KL weight", move="scale"),
                    Param("n_samples", "int", 1, 64, 8, "hparams",
                          help="latent draws averaged for the mean prediction", move="halve-double"))),
    Backbone("flow-matching", "generative", "flow_matching",
             "conditional flow matching from the control cell to the perturbed cell; Euler ODE at inference",
             extra=(Param("ode_steps", "int", 1, 200, 16, "hparams", help="Euler steps at inference",
                          move="halve-double"),
                    Param("sigma", "float", 0.0, 2.0, 0.1, "hparams",
                          help="noise added along the probability path", move="scale"),
                    Param("n_samples", "int", 1, 64, 4, "hparams",
                          help="trajectories averaged for the mean prediction", move="halve-double"))),
)}


@dataclass(frozen=True)
class Refinement:
    """One refinement segment: ``hparams:k=v,...``, ``loss:NAME`` or ``on:SIMPLE``."""

    kind: Literal["hparams", "loss", "on"]
    values: tuple[tuple[str, Any], ...] = ()  # for hparams: sorted (name, value)
    loss: str | None = None
    base: str | None = None  # for on: the closed-form backbone under the network

    def text(self) -> str:
        if self.kind == "loss":
            return f"loss:{self.loss}"
        if self.kind == "on":
            return f"on:{self.base}"
        return "hparams:" + ",".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in self.values)


REFINEMENT_KINDS = ("hparams", "loss", "on")


@dataclass(frozen=True)
class ActionPath:
    paradigm: str
    backbone: str | None = None
    refinements: tuple[Refinement, ...] = field(default_factory=tuple)

    @property
    def depth(self) -> int:
        return 1 + (self.backbone is not None) + len(self.refinements)

    def text(self) -> str:
        parts = [self.paradigm] + ([self.backbone] if self.backbone else [])
        return SEP.join(parts + [r.text() for r in self.refinements])

    __str__ = text

    @property
    def spec(self) -> Backbone:
        if self.backbone is None:
            raise InputError(f"action path {self.text()!r} names no backbone", where="--action",
                             fix=f"add one of: {', '.join(backbones_of(self.paradigm))}")
        return BACKBONES[self.backbone]

    def resolved(self) -> dict[str, Any]:
        """Every parameter's value on this path: defaults, then refinements in order."""
        values: dict[str, Any] = {n: p.default if p.kind == "float" else int(p.default)
                                  for n, p in self.spec.params.items()}
        values["loss"] = "mse"
        values["on"] = None
        for r in self.refinements:
            if r.kind == "loss":
                values["loss"] = r.loss
            elif r.kind == "on":
                values["on"] = r.base
            else:
                values.update(dict(r.values))
        return values

    @property
    def base(self) -> "Backbone | None":
        """The closed-form backbone this network sits on (``on:SIMPLE``), if any."""
        on = next((r.base for r in self.refinements if r.kind == "on"), None)
        return BACKBONES[on] if on else None

    def training_config(self, seed: int = 0) -> dict[str, Any]:
        """config.json for the harness: training settings plus the model's ``hparams``."""
        values = self.resolved()
        params = self.spec.params
        config: dict[str, Any] = {"seed": seed, "loss": values["loss"]}
        hparams: dict[str, Any] = {"loss": values["loss"]}
        for name, p in params.items():
            (config if p.target == "config" else hparams)[name] = values[name]
        config["hparams"] = hparams
        return config

    def child(self, segment: str) -> "ActionPath":
        return parse_action(f"{self.text()}{SEP}{segment}")


def simple_backbones() -> list[str]:
    return [b.name for b in BACKBONES.values() if b.closed_form]


def residual_base(action: str) -> str | None:
    """The simple backbone named by an action's last segment ``on:SIMPLE`` (None otherwise)."""
    last = action.rstrip(SEP).rsplit(SEP, 1)[-1]
    return last[3:] if last.startswith("on:") else None


def closed_form(action: str) -> bool:
    """Whether ``action`` is (or opens a paradigm of only) closed-form models: seconds to fit."""
    path = parse_action(action)
    names = [path.backbone] if path.backbone else backbones_of(path.paradigm)
    return bool(names) and all(BACKBONES[b].closed_form for b in names)


def backbones_of(paradigm: str) -> list[str]:
    return [b.name for b in BACKBONES.values() if b.paradigm == paradigm]


def not_for(kind: str) -> set[str]:
    """Backbones that cannot answer task kind ``kind`` better than its baselines by construction:
    left out of that kind's search menu."""
    held_out = task_kind(kind).inner_unit
    return {b.name for b in BACKBONES.values() if b.for_held_out and b.for_held_out != held_out}


def all_backbone_paths() -> list[str]:
    return [f"{b.paradigm}{SEP}{b.name}" for b in BACKBONES.values()]


def parse_action(text: str) -> ActionPath:
    """Parse and validate an action path; errors list the valid choices at the failing level."""
    where = f"action {text!r}"
    segs = [s.strip() for s in str(text).strip().strip(SEP).split(SEP)]
    if not segs or not segs[0]:
        raise InputError("empty action path", where="--action",
                         fix=f"start with a paradigm: {', '.join(PARADIGMS)}")
    if segs[0] not in PARADIGMS:
        hint = ""
        if segs[0] in BACKBONES:
            hint = f" (did you mean {BACKBONES[segs[0]].paradigm}/{segs[0]}?)"
        raise InputError(f"unknown paradigm {segs[0]!r}{hint}", where=where,
                         fix=f"level 1 (paradigm) must be one of: {', '.join(PARADIGMS)}")
    path = ActionPath(segs[0])
    if len(segs) == 1:
        return path
    valid = backbones_of(path.paradigm)
    if segs[1] not in valid:
        if segs[1] in BACKBONES:
            what = (f"backbone {segs[1]!r} belongs to paradigm {BACKBONES[segs[1]].paradigm!r},"
                    f" not {path.paradigm!r}")
        else:
            what = f"unknown backbone {segs[1]!r}"
        raise InputError(what, where=where,
                         fix=f"level 2 (backbone) under {path.paradigm} must be one of: {', '.join(valid)}")
    path = ActionPath(path.paradigm, segs[1])
    refs = tuple(parse_refinement(s, path.spec, where, level=3 + i) for i, s in enumerate(segs[2:]))
    if sum(r.kind == "on" for r in refs) > 1:
        raise InputError("more than one on:SIMPLE segment", where=where,
                         fix="a network learns the residual on top of one simple model: keep one on: segment")
    return replace(path, refinements=refs)


def refinement_help(backbone: Backbone) -> str:
    params = ", ".join(f"{p.name} in [{fmt(p.low)}, {fmt(p.high)}]" for p in backbone.params.values())
    on = f"; or on:{'|'.join(simple_backbones())}" if backbone.on_simple else ""
    return f"hparams:NAME=VALUE[,NAME=VALUE] with {params}; or loss:{'|'.join(LOSSES)}{on}"


def parse_refinement(seg: str, backbone: Backbone, where: str, level: int) -> Refinement:
    if seg in PARADIGMS or seg in BACKBONES:
        raise InputError(
            f"segment {level} {seg!r} would revert the paradigm/backbone decided above it",
            where=where,
            fix=f"below a backbone only refinements may follow: {refinement_help(backbone)}; "
                f"to try {seg!r} start a new path from the root",
        )
    kind, sep, body = seg.partition(":")
    if not sep or kind not in REFINEMENT_KINDS:
        raise InputError(f"unknown refinement {seg!r} at level {level}", where=where,
                         fix=f"level {level} (refinement) must be {refinement_help(backbone)}")
    if kind == "loss":
        if body not in LOSSES:
            raise InputError(f"unknown loss {body!r}", where=where,
                             fix=f"loss must be one of: {', '.join(LOSSES)}")
        return Refinement("loss", loss=body)
    if kind == "on":
        able = [f"{b.paradigm}{SEP}{b.name}" for b in BACKBONES.values() if b.on_simple]
        if not backbone.on_simple:
            raise InputError(f"{backbone.paradigm}/{backbone.name} cannot learn a residual on a simple model",
                             where=where, fix=f"on: applies to {', '.join(able)}")
        if body not in simple_backbones():
            raise InputError(f"on:{body} names no simple model", where=where,
                             fix=f"on: must name one of: {', '.join(simple_backbones())}")
        return Refinement("on", base=body)
    params = backbone.params
    values: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in body.split(","))):
        name, eq, raw = item.partition("=")
        name = name.strip()
        if not eq or name not in params:
            raise InputError(f"unknown hyperparameter {name!r} for {backbone.paradigm}/{backbone.name}",
                             where=where, fix=f"valid: {refinement_help(backbone)}")
        values[name] = params[name].parse(raw.strip(), where)
    if not values:
        raise InputError("empty hparams refinement", where=where, fix=f"use {refinement_help(backbone)}")
    return Refinement("hparams", tuple(sorted(values.items())))


def moves(p: Param, v: float) -> list[float | int]:
    """The one-step neighbours of value ``v`` under ``p.move`` that lie in ``p``'s range."""
    if p.move == "scale":
        cands = [v * 0.3, v * 3.0] if v else [p.default]
    elif p.move == "halve-double":
        cands = [v // 2, v * 2] if p.kind == "int" else [v / 2, v * 2]
    elif p.move == "step":
        cands = [v - 1, v + 1]
    elif p.move == "dropout":
        cands = [0.0 if v > 0 else 0.1, min(v + 0.2, 0.5)]
    elif p.move == "switch-on":
        cands = [v * 10 if v else 1e-4]
    else:
        return []
    out = []
    for c in cands:
        c = int(c) if p.kind == "int" else float(f"{c:.3g}")
        if p.low <= c <= p.high and c != v and c not in out:
            out.append(c)
    return out


def expansions(path: ActionPath | None) -> list[str]:
    """The finite menu of children, level by level: paradigms at the root, the paradigm's
    backbones under it, then one-step refinements of every parameter the backbone's template
    reads (``moves``) and the other loss. Every entry parses; the order carries no preference
    (the Planner chooses among untried children by a prior)."""
    if path is None:
        return list(PARADIGMS)
    if path.backbone is None:
        return [f"{path.paradigm}{SEP}{b}" for b in backbones_of(path.paradigm)]
    values = path.resolved()
    out: list[str] = []
    for name, p in path.spec.params.items():
        for c in moves(p, values[name]):
            out.append(f"{path.text()}{SEP}hparams:{name}={fmt(c)}")
    if not path.spec.closed_form:
        out += [f"{path.text()}{SEP}loss:{loss}" for loss in LOSSES if loss != values["loss"]]
    if path.spec.on_simple and values["on"] is None:
        out += [f"{path.text()}{SEP}on:{b}" for b in simple_backbones()]
    return list(dict.fromkeys(out))


def describe() -> dict[str, Any]:
    """The whole action space as JSON-ready data (for prompts, docs, and the CLI)."""
    return {
        "paradigms": {n: p.description for n, p in PARADIGMS.items()},
        "backbones": {
            f"{b.paradigm}{SEP}{b.name}": {
                "description": b.description,
                "params": {p.name: {"kind": p.kind, "low": p.low, "high": p.high,
                                    "default": p.default, "help": p.help}
                           for p in b.params.values()},
            }
            for b in BACKBONES.values()
        },
        "refinements": {"hparams": "hparams:NAME=VALUE[,NAME=VALUE]", "loss": list(LOSSES),
                        "on": {"simple": simple_backbones(),
                               "backbones": [f"{b.paradigm}{SEP}{b.name}" for b in BACKBONES.values() if b.on_simple]}},
    }


def child_actions(action: str | None) -> list[str]:
    """The menu below a node of the search tree (``None`` or "" is the root)."""
    return expansions(parse_action(action) if action else None)
