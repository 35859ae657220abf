"""Budgets a user thinks in: a wall-clock limit ("45m") and an estimate of how many nodes fit.

The per-node estimate is a linear model of the work one node does (training cells x genes x
epochs run) plus a fixed start-up cost, fitted by least squares to the CPU seconds of the 75
nodes of bench/search.py's tables (three real tasks, one torch thread, 20-epoch cap; mean
relative error 18%). With the bench's cap nodes ran 94% of their epochs; under a run's larger
cap early stopping ends them sooner, which ``TYPICAL_EPOCH_FRACTION`` assumes (not measured).
CPU seconds are what an idle core needs; on a busy machine the wall time per node grows, which
is why the Planner decides when to stop from the wall times of the nodes it has already run.
"""

from __future__ import annotations

import math
import re

from harmonycell.tools.errors import InputError

STARTUP_S = 9.7  # interpreter + torch import + data load + prediction, per node (CPU s)
SECONDS_PER_UNIT = 7.6e-8  # per training cell x gene x epoch (CPU s, 1 thread)
TYPICAL_EPOCH_FRACTION = 0.5  # assumed: early stopping ends a node at about half its epoch cap
DEFAULT_TIME_LIMIT = "15m"  # `harmonycell run`: several paradigms and a refinement round
_UNIT = {"s": 1, "m": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smh])")


def parse_duration(text: str | None) -> float | None:
    """'45m', '1h30m', '90s', '1.5h' -> seconds; a bare number is minutes; None/'none' -> no limit."""
    if text is None or str(text).strip().lower() in ("", "none", "0"):
        return None
    raw = str(text).strip().lower()
    try:
        value = float(raw) * 60
    except ValueError:
        parts = _PART.findall(raw)
        if not parts or _PART.sub("", raw).strip():
            raise InputError(f"cannot read the time limit {text!r}", where="--time-limit",
                             fix="write a duration such as 45m, 1h30m, 90s or 2h (a bare number is minutes)") from None
        value = sum(float(n) * _UNIT[u] for n, u in parts)
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"time limit {text!r} is not positive", where="--time-limit",
                         fix="write a positive duration such as 45m")
    return value


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s")


def estimate_node_seconds(n_train_cells: int, n_genes: int, epochs: int) -> float:
    work = n_train_cells * n_genes * max(1, epochs) * TYPICAL_EPOCH_FRACTION
    return STARTUP_S + SECONDS_PER_UNIT * work


def nodes_that_fit(time_limit_s: float | None, per_node_s: float, budget: int) -> int:
    if time_limit_s is None:
        return budget
    return max(1, min(budget, int(time_limit_s // max(per_node_s, 1e-6))))
