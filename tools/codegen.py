"""Placeholder builtin Coder until the model library lands (issue 6)."""

from __future__ import annotations

from importlib import resources


def render_node(action: str, seed: int = 0, epochs: int = 100) -> tuple[str, dict]:
    code = resources.files("harmonycell.tools").joinpath("model_templates/residual_mlp.py").read_text()
    config = {"seed": seed, "epochs": epochs, "lr": 1e-3, "batch_size": 128, "loss": "mse"}
    for part in action.split("/")[2:]:
        key, _, val = part.partition(":")
        if key == "loss":
            config["loss"] = val
        elif key == "hparams":
            for kv in val.split(","):
                k, _, v = kv.partition("=")
                config[k] = float(v) if k in {"lr", "weight_decay"} else int(v)
    return code, config
