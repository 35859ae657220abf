"""docs/models.md rendering under folds x repeats: mean ± sd over folds, paired comparisons
with intervals, and a verdict line that names only backbones better than every baseline."""

from bench.models_doc import TASKS, render
from harmonycell.tools.evaluation.metrics import SEARCH_METRIC as METRIC


def rows(vals, fold=0):
    """One fold's queries: each fold tests its own units (G0-G3, then G4-G7)."""
    return [{"condition": f"G{i + len(vals) * fold}", "context": "d|K562", "n_cells": 10,
             "metrics": {METRIC: v, "DeltaPCC": v + 0.3, "RMSE": 0.3 - 0.1 * v}} for i, v in enumerate(vals)]


def result(model_offsets):
    """Two folds of four queries; each backbone = train_mean's values + an offset (+ jitter)."""
    folds = []
    for k in range(2):
        base = [0.05 * (i + 4 * k) for i in range(4)]
        runs = [{"key": f"s0f{k}:{a}", "action": a, "status": "ok", "wall_s": 12.3, "epochs_run": 10,
                 "best_epoch": 7, "rows": rows([b + off + 0.01 * i for i, b in enumerate(base)], k)}
                for a, off in model_offsets.items()]
        folds.append({"seed": 0, "fold": k, "cells": 100, "genes": 50, "train_cells": 80, "test_queries": 4,
                      "baseline_rows": {"train_mean": rows(base, k), "linear": rows([b + 0.1 for b in base], k),
                                        "control_mean": rows([b - 0.2 for b in base], k)},
                      "linear_fallbacks": {"n": 1, "of": 4, "why": "not a measured gene"},
                      "runs": runs, "seconds": 30.0})
    return {"task": "t", "title": "Toy task", "kind": "unseen-perturbation", "seed": 0, "folds": 2,
            "repeats": 1, "epochs": 10, "fold_results": folds, "seconds": 60.0,
            "machine": "x86_64, 2 CPU cores, no GPU", "threads": "1", "finished": "now", "partial": False}


def test_render_names_only_backbones_better_than_every_baseline():
    text = render([result({"discriminative/resnet": 0.3, "generative/cvae": 0.05})])
    assert f"Better than every baseline on {METRIC} (sign-flip test, Holm): discriminative/resnet." in text
    assert "| discriminative/resnet | 2/2 |" in text and " ± " in text
    assert "**better**" in text and "**worse**" in text  # cvae: 0.05 above train_mean, below linear
    assert "1 of 2 models are better than every baseline" in text
    assert "fell back to the train-mean shift on 2 of 8 queries" in text


def test_render_says_plainly_when_none_wins():
    text = render([result({"discriminative/resnet": 0.0})])
    assert "**No model is better than every baseline" in text


def test_the_real_tasks_with_held_out_units_are_configured():
    assert {t.kind for t in TASKS.values()} == {"unseen-perturbation", "unseen-cell-context", "unseen-combination"}
    assert TASKS["norman_pairs"].subset == ("dataset", "norman19")
    assert TASKS["norman"].subset == ("dataset", "norman19")
