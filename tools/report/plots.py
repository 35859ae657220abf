"""The report's figure: what a person would rather look at than read.

Three panels: the best model beside the baselines on the headline metrics; its DeltaPCC per
held-out perturbation; and the training curves of every node of the search.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs in terminals, CI and sandboxes without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harmonycell.tools.record import atomic  # noqa: E402
from harmonycell.tools.search.tree import ROOT, Tree  # noqa: E402

METRICS = ("DeltaPCC", "PCC_Delta_shift_corrected", "Cosine_delta")


def plot_report(out: Path, model: dict, baselines: dict[str, dict], per_perturbation: list[dict],
                tree: Tree, nodes_dir: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    names = (["model"] if model else []) + list(baselines)
    series = ([model] if model else []) + [baselines[n] for n in baselines]
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(METRICS))
    for i, (name, vals) in enumerate(zip(names, series)):
        heights = [np.nan if vals.get(m) is None else vals[m] for m in METRICS]
        ax.bar(x + i * width, heights, width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, ["DeltaPCC", "shift-corrected", "Cosine_delta"])
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title("test split: model vs baselines")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)

    ax = axes[1]
    rows = sorted((r for r in per_perturbation if r["metrics"].get("DeltaPCC") is not None),
                  key=lambda r: r["metrics"]["DeltaPCC"])
    ax.barh([f"{r['condition']} ({r['context'].split('|')[-1]})" for r in rows],
            [r["metrics"]["DeltaPCC"] for r in rows], color="tab:blue")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("DeltaPCC")
    ax.set_title("per held-out perturbation")

    ax = axes[2]
    for node in tree.nodes.values():
        log = nodes_dir / node.id / "train_log.jsonl"
        if node.id == ROOT or not log.exists():
            continue
        recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        ax.plot([r["epoch"] for r in recs], [r["stop_loss"] for r in recs],
                label=f"{node.id} {node.action.split('/', 1)[-1]}"[:40])
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss on held-out training perturbations")
    ax.set_title("search: training curves")
    ax.legend(fontsize=7)
    fig.tight_layout()

    def write(tmp: Path) -> None:
        fig.savefig(tmp, format="png", dpi=110)

    atomic.write_with(out, write)
    plt.close(fig)
    return out
