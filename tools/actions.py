"""Placeholder action space until the model library lands (issue 6)."""

from __future__ import annotations


def root_actions() -> list[str]:
    return ["baseline/residual-mlp"]


def child_actions(action: str) -> list[str]:
    if "/" in action and action.count("/") == 1:
        return [f"{action}/hparams:lr=3e-4", f"{action}/loss:huber"]
    return []
