"""The expert benchmark's pure parts (the real run: bench/experts.py): registries, the rows of an
expert that cannot run here, pooling per-query scores over cross-validation folds, and merging a
new result into the committed ones. No expert is installed or trained here."""

import csv
import io
import json

from bench import experts as ex
from harmonycell.tools.data.splits import KINDS


def rows(values, prefix="P"):
    """Per-query rows as the host scorer dumps them: one query per value."""
    return [{"condition": f"{prefix}{i}", "context": "c0",
             "metrics": {"PCC_Delta_shift_corrected": v, "DeltaPCC": v, "RMSE": 1.0 - v}}
            for i, v in enumerate(values)]


def test_every_expert_has_an_adapter_file_or_a_stated_reason_and_every_task_a_real_input(real_data):
    for name, e in ex.EXPERTS.items():
        if e.adapter is None:
            assert len(e.why_not) > 40, name  # the exact reason, not a word
        else:
            assert (ex.ADAPTERS / e.adapter).is_file(), name
            assert all("==" in r for r in e.requirements), name  # pinned, so the venv is reproducible
    for task in ex.TASKS.values():
        assert task.kind in KINDS
        assert all((real_data / f).is_file() for f in task.files), task.key


def test_an_expert_that_cannot_run_gets_its_reason_and_no_venv(tmp_path):
    py, why = ex.ensure_venv(ex.EXPERTS["gears"], cache=tmp_path)
    assert py is None and "dataverse" in why
    py, why = ex.ensure_venv(ex.EXPERTS["cpa"], cache=tmp_path)
    assert py is None and "torch>1.8,<2.0" in why
    assert not any(tmp_path.iterdir())  # nothing half-made


def test_an_installed_expert_venv_is_reused_without_pip(tmp_path):
    home = tmp_path / "biolord"
    (home / "venv" / "bin").mkdir(parents=True)
    (home / "venv" / "bin" / "python").write_text("")
    (home / "installed.json").write_text("{}")
    py, why = ex.ensure_venv(ex.EXPERTS["biolord"], cache=tmp_path)
    assert py == home / "venv" / "bin" / "python" and why == ""


def test_a_cross_validated_task_is_the_projects_own_fold_run():
    cmd = ex.run_command(ex.TASKS["papalexi"], 0, 3, 60, "auto", ex.CACHE / "x", folds=3)
    assert cmd[cmd.index("--folds") + 1] == "3" and "--no-kb" in cmd
    assert "--folds" not in ex.run_command(ex.TASKS["papalexi"], 0, 3, 60, "auto", ex.CACHE / "x")


def test_folds_pool_per_query_differences_into_one_interval():
    # 2 folds x 6 queries; the expert beats HarmonyCell by 0.2-0.3 on every query, the baseline
    # equals HarmonyCell up to noise of both signs
    folds = [
        {"harmonycell": {"status": "ok", "rows": rows([0.1, 0.2, 0.0, 0.1, 0.2, 0.0], f"A{k}"),
                         "action": "generative/cvae", "wall_s": 10.0},
         "expert": {"status": "ok", "rows": rows([0.3, 0.5, 0.2, 0.4, 0.4, 0.3], f"A{k}"), "wall_s": 20.0,
                    "peak_rss_mb": 600},
         "train_mean": {"status": "ok", "rows": rows([0.15, 0.15, 0.05, 0.05, 0.15, 0.05], f"A{k}")},
         "gears": {"status": "cannot run here", "reason": "needs the network"}}
        for k in range(2)]
    folds[1]["expert"] = {"status": "failed", "reason": "out of memory", "wall_s": 5.0}
    agg = ex.aggregate_folds(folds)
    e = agg["expert"]
    assert e["status"] == "ok in 1 of 2 folds" and e["folds_ok"] == 1 and e["fold_means"][1] is None
    c = next(c for c in e["comparisons"] if c["metric"] == "PCC_Delta_shift_corrected" and c["baseline"] == "harmonycell")
    # only the fold it ran in: six units, all better (exact sign-flip p = 2/64)
    assert c["n"] == 6 and c["conclusion"] == "better" and c["ci_low"] > 0
    t = next(c for c in agg["train_mean"]["comparisons"] if c["metric"] == "PCC_Delta_shift_corrected")
    assert t["n"] == 12 and t["conclusion"] == "indistinguishable"  # one query tested once: 2 folds x 6
    p = agg["harmonycell"]["pooled"]["PCC_Delta_shift_corrected"]
    assert abs(p["mean"] - 0.1) < 1e-9 and p["n"] == 12 and p["ci_low"] <= 0.1 <= p["ci_high"]
    assert agg["harmonycell"]["spread"]["RMSE"]["n_folds"] == 2 and "comparisons" not in agg["harmonycell"]
    assert agg["harmonycell"]["action"] == "generative/cvae" and agg["expert"]["peak_rss_mb"] == 600
    assert agg["gears"] == {"status": "cannot run here", "reason": "needs the network"}


def test_a_metric_undefined_on_every_query_stays_undefined_when_pooled():
    p = ex.pooled_metric([None, None, None], "DeltaPCC")
    assert p["mean"] is None and p["ci_low"] is None
    p = ex.pooled_metric([0.5, None, 0.1], "DeltaPCC")  # an undefined correlation is left out, never 0
    assert abs(p["mean"] - 0.3) < 1e-9 and p["n"] == 2


def fold_result(task="papalexi", folds=2):
    per_fold = [{"harmonycell": {"status": "ok", "rows": rows([0.1, 0.2, 0.3], f"F{k}"), "action": "a", "wall_s": 1.0},
                 "state": {"status": "ok", "rows": rows([0.0, 0.1, 0.1], f"F{k}"), "wall_s": 2.0}}
                for k in range(folds)]
    fold_entries = []
    for f in per_fold:
        for name, e in f.items():
            e["mean"] = ex.summarise(e["rows"])
        fold_entries.append(f)
    return {"task": task, "title": "T", "kind": "unseen-perturbation", "seed": 0, "folds": folds, "cv": "cv-x",
            "n_queries": 3 * folds, "entries": ex.aggregate_folds(fold_entries),
            "per_fold": [{"fold": k, "run": f"repeat0-fold{k}", "n_queries": 3, "verdict": {},
                          "entries": ex.without_rows(f)} for k, f in enumerate(per_fold)]}


def test_a_new_result_replaces_only_its_own_task_seed_and_fold_count():
    committed = json.loads(ex.RESULTS.read_text())
    before = {ex.result_key(r) for r in committed["tasks"]}
    assert {("kang", 0, 1, ""), ("norman", 0, 1, "")} <= before
    new = {"machine": "m", "install": {"state": "installed in its own venv"}, "tasks": [fold_result()],
           "finished": "now"}
    merged = ex.merge_results(committed, new)
    keys = [ex.result_key(r) for r in merged["tasks"]]
    assert set(keys) == before | {("papalexi", 0, 2, "")} and len(keys) == len(set(keys))
    folds = [k[2] for k in keys]
    assert folds == sorted(folds, key=lambda f: f > 1)  # single splits first, then the cross-validated tasks
    assert merged["install"]["cpa"] == committed["install"]["cpa"] and merged["finished"] == "now"
    again = ex.merge_results(merged, {**new, "tasks": [fold_result(folds=2)]})
    assert [ex.result_key(r) for r in again["tasks"]] == keys
    # a run that read a knowledge base sits beside the one that did not
    with_kb = ex.merge_results(merged, {**new, "tasks": [{**fold_result(folds=2), "kb": "kb_a"}]})
    other_kb = ex.merge_results(with_kb, {**new, "tasks": [{**fold_result(folds=2), "kb": "kb_b"}]})
    assert set(ex.result_key(r) for r in other_kb["tasks"]) == set(keys) | {("papalexi", 0, 2, "kb_a"),
                                                                             ("papalexi", 0, 2, "kb_b")}


def test_only_an_expert_that_beat_our_pick_and_has_a_backbone_of_ours_is_a_win():
    def entry(name, conclusion, diff):
        return {"status": "ok", "comparisons": [
            {"baseline": "harmonycell", "metric": "PCC_Delta_shift_corrected", "conclusion": conclusion,
             "mean_diff": diff, "ci_low": diff - 0.05, "ci_high": diff + 0.05, "n": 25},
            {"baseline": "harmonycell", "metric": "RMSE", "conclusion": "better", "mean_diff": -0.1,
             "ci_low": -0.2, "ci_high": -0.01, "n": 25}]}
    res = {"task": "papalexi", "seed": 0, "folds": 3, "entries": {
        "harmonycell": {"status": "ok"}, "biolord": entry("biolord", "better", 0.101),
        "state": entry("state", "better", 0.2),
        "control_mean": entry("control_mean", "better", 0.4)}}  # a baseline, not an expert
    assert ex.expert_wins(res)[0] == {"expert": "biolord", "backbone": "discriminative/attribute-decoder",
                                      "metric": "PCC_Delta_shift_corrected", "delta": 0.101,
                                      "lo": 0.101 - 0.05, "hi": 0.101 + 0.05, "n": 25}
    assert [w["backbone"] for w in ex.expert_wins(res)] == ["discriminative/attribute-decoder",
                                                            "discriminative/set-transformer"]
    res["entries"]["biolord"] = entry("biolord", "indistinguishable", 0.03)
    res["entries"]["state"] = entry("state", "worse", -0.2)
    assert ex.expert_wins(res) == []


def test_a_cross_validated_task_renders_pooled_intervals_per_fold_rows_and_a_csv():
    res = fold_result()
    text = ex.render({"machine": "m", "finished": "f", "install": {}, "tasks": [res]})
    assert "2-fold cross-validation" in text and "6 test queries pooled over 2 folds" in text
    assert "| state | 0.067 [" in text and "worse (-0.133 [" in text  # pooled mean, paired difference
    assert "| harmonycell | 0.200 | 0.200 | 0.200 ± 0.000 |" in text  # per fold, then across folds
    assert "Worse than it: state (expert)." in text
    table = list(csv.DictReader(io.StringIO(ex.fold_csv({"tasks": [res]}))))
    assert len(table) == 4 and {r["model"] for r in table} == {"harmonycell", "state"}
    assert all(r["fold"] in ("0", "1") and r["task"] == "papalexi" for r in table)


def test_the_committed_doc_is_the_rendering_of_the_committed_results():
    assert ex.DOC.read_text() == ex.render(json.loads(ex.RESULTS.read_text()))


def test_a_run_reading_the_knowledge_base_is_compared_with_the_same_search_without_it():
    per_fold = [{"harmonycell": {"status": "ok", "rows": rows([0.3, 0.4, 0.5], f"F{k}"),
                                 "action": "discriminative/attribute-decoder", "wall_s": 1.0},
                 ex.WITHOUT_KB: {"status": "ok", "rows": rows([0.0, 0.1, 0.1], f"F{k}"),
                                 "action": "generative/cvae", "wall_s": 1.0}} for k in range(2)]
    for f in per_fold:
        for e in f.values():
            e["mean"] = ex.summarise(e["rows"])
    res = {"task": "papalexi", "title": "T", "kind": "unseen-perturbation", "seed": 0, "folds": 2, "cv": "cv-x",
           "kb": True, "n_queries": 6, "entries": ex.aggregate_folds(per_fold),
           "per_fold": [{"fold": k, "run": f"repeat0-fold{k}", "n_queries": 3, "verdict": {},
                         "entries": ex.without_rows(f)} for k, f in enumerate(per_fold)]}
    text = ex.render({"machine": "m", "finished": "f", "install": {}, "tasks": [res]})
    assert "HarmonyCell reading a knowledge base with the expert wins" in text
    assert "| HarmonyCell without the knowledge base (generative/cvae) |" in text
    assert "Worse than it: harmonycell_without_kb (the same search without the knowledge base)." in text
    assert "reading the stored win, HarmonyCell selected discriminative/attribute-decoder" in text
