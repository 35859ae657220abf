"""docs/models.md rendering: the verdict line says plainly whether any backbone beats the
train-mean shift on both DeltaPCC and the shift-corrected PCC."""

from bench.models_doc import TASKS, render


def result(model_scores):
    runs = [{"action": a, "status": "ok", "wall_s": 12.3, "epochs_run": 20, "best_epoch": 11,
             "metrics": {"DeltaPCC": d, "PCC_Delta_shift_corrected": s, "RMSE": 0.2}}
            for a, (d, s) in model_scores.items()]
    return {"task": "t", "title": "Toy task", "kind": "unseen-perturbation", "cells": 10, "genes": 5,
            "train_cells": 8, "test_queries": 2, "machine": "x86_64, 2 CPU cores, no GPU", "threads": "1",
            "finished": "now", "linear_fallbacks": {"n": 1, "of": 2, "why": "gene not measured"},
            "baselines": {"control_mean": {"RMSE": 0.3, "DeltaPCC": None},
                          "train_mean": {"DeltaPCC": 0.5, "PCC_Delta_shift_corrected": 0.1, "RMSE": 0.25},
                          "linear": {"DeltaPCC": 0.55, "PCC_Delta_shift_corrected": 0.2}},
            "runs": runs}


def test_render_names_the_winners_and_nulls():
    text = render([result({"discriminative/resnet": (0.6, 0.3), "generative/cvae": (0.6, 0.05)})])
    assert "Beats the train-mean shift on both DeltaPCC and the shift-corrected PCC: discriminative/resnet." in text
    assert "| baseline: control_mean | - | - | - | n/a |" in text
    assert "1 of 2 queries fell back" in text
    assert "| discriminative/resnet | ok | 12.3 | 20 (11) | 0.600 | 0.300 |" in text


def test_render_says_plainly_when_none_wins():
    text = render([result({"discriminative/resnet": (0.4, 0.3)})])
    assert "**No backbone beats the train-mean shift" in text


def test_the_three_real_tasks_are_configured():
    assert {t.kind for t in TASKS.values()} == {"unseen-perturbation", "unseen-cell-context"}
    assert TASKS["norman"].subset == ("dataset", "norman19")
