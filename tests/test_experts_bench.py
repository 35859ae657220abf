"""The expert benchmark's pure parts (the real run: bench/experts.py): registries, the rows of an
expert that cannot run here, pooling per-query scores over cross-validation folds, merging a
new result into the committed ones, and GEARS's GO files built from the gene database. No expert
is installed or trained here."""

import csv
import importlib.util
import io
import json
import pickle

import pandas as pd
import pytest

from bench import experts as ex
from bench import gears_go
from harmonycell.tools.data.splits import KINDS
from harmonycell.tools.genes.db import GeneDB

# real genes of the Norman screen: erythroid (KLF1, GATA1, TAL1), myeloid (CEBPA, CEBPB, SPI1), and others
NORMAN_GENES = ["KLF1", "GATA1", "TAL1", "CEBPA", "CEBPB", "SPI1", "CBL", "CNN1", "FOXA1", "FOXA3", "JUN",
                "FOSB", "MAPK1", "ETS2", "SET", "DUSP9", "BAK1", "IRF1"]


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


@pytest.fixture(scope="module")
def gene_db():
    with GeneDB() as d:  # CI installs it: a missing database fails here, it is not skipped
        yield d


def gears_reference_edges(gene2go: dict, k: int) -> set:
    """cell-gears 0.1.2's own GO graph: utils.get_GO_edge_list over all pairs (Jaccard > 0.1),
    then get_similarity_network's per-target nlargest(k + 1)."""
    pairs = [(a, b, len(gene2go[a] & gene2go[b]) / len(gene2go[a] | gene2go[b])) for a in gene2go for b in gene2go]
    df = pd.DataFrame([p for p in pairs if p[2] > 0.1], columns=["source", "target", "importance"])
    df = df.groupby("target").apply(lambda x: x.nlargest(k + 1, ["importance"])).reset_index(drop=True)
    return {(s, t, round(w, 9)) for s, t, w in df.itertuples(index=False)}


def test_gears_is_an_expert_with_its_adapter_and_the_undeclared_torch_geometric_pinned():
    e = ex.EXPERTS["gears"]
    assert e.adapter == "gears_adapter.py" and (ex.ADAPTERS / e.adapter).is_file() and not e.why_not
    assert "cell-gears==0.1.2" in e.requirements
    assert any(r.startswith("torch_geometric==") for r in e.requirements)
    # the host writes its GO files, nothing is downloaded (bench/experts.py imports bench/gears_go.py as a
    # script's sibling module, so the function is compared by its code, not its identity)
    assert e.prepare.__code__ is not None and e.prepare.__code__.co_filename == gears_go.write_for_sandbox.__code__.co_filename
    assert e.prepare.__name__ == "write_for_sandbox"


def test_gears_go_sets_come_from_the_database_and_an_unknown_gene_is_reported_not_invented(gene_db):
    sets = gears_go.go_sets(NORMAN_GENES + ["NOTAGENE1", "ENSG00000102145"], gene_db)
    assert sets.unknown == ["NOTAGENE1"] and "NOTAGENE1" not in sets.gene2go
    assert set(NORMAN_GENES) <= set(sets.gene2go)
    assert sets.renamed == {"ENSG00000102145": "GATA1"}  # an Ensembl id is looked up as its symbol
    assert sets.gene2go["ENSG00000102145"] == sets.gene2go["GATA1"]
    assert "GO:0030218" in sets.gene2go["KLF1"]  # erythrocyte differentiation, a direct annotation


@pytest.mark.filterwarnings("ignore:DataFrameGroupBy.apply:FutureWarning")  # GEARS's own pandas call
def test_gears_go_edges_are_gears_own_graph_and_link_genes_that_share_go_terms(gene_db):
    gene2go = gears_go.go_sets(NORMAN_GENES, gene_db).gene2go
    edges = gears_go.go_edges(gene2go, k=3)
    assert {(s, t, round(w, 9)) for s, t, w in edges} == gears_reference_edges(gene2go, 3)
    assert all(sum(t == g for _, t, _ in edges) <= 4 for g in gene2go)  # the gene itself + k neighbours
    assert ("GATA1", "GATA1", 1.0) in edges
    near = {t: {s for s, tt, _ in edges if tt == t and s != t} for t in gene2go}
    assert "CEBPB" in near["CEBPA"] and "CEBPA" in near["CEBPB"]  # C/EBP family: shared GO terms
    assert "TAL1" in near["KLF1"]  # both erythroid transcription factors
    assert "CEBPA" not in near["KLF1"]


def test_gears_files_sit_where_gears_looks_for_them(gene_db, tmp_path):
    info = gears_go.write_gears_files(NORMAN_GENES[:12], ["KLF1", "CEBPA", "NOTAGENE1"], tmp_path, gene_db, k=3)
    spec = importlib.util.spec_from_file_location("gears_adapter", ex.ADAPTERS / "gears_adapter.py")
    adapter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(adapter)
    # the adapter checks exactly the paths cell-gears 0.1.2 downloads to when they are missing
    assert adapter.GEARS_FILES == (gears_go.GENE2GO, gears_go.GENE_LIST, gears_go.EDGES)
    gene2go = pickle.loads((tmp_path / gears_go.GENE2GO).read_bytes())
    assert set(gene2go) == set(NORMAN_GENES[:12]) and all(isinstance(v, set) and v for v in gene2go.values())
    assert pickle.loads((tmp_path / gears_go.GENE_LIST).read_bytes()) == NORMAN_GENES[:12] + ["NOTAGENE1"]
    df = pd.read_csv(tmp_path / gears_go.EDGES)
    assert list(df.columns) == ["source", "target", "importance"] and len(df) == info["edges"]
    assert set(df["source"]) | set(df["target"]) <= set(gene2go)
    assert info["unknown"] == ["NOTAGENE1"] and info["perts_not_in_go"] == ["NOTAGENE1"]


def test_the_gears_adapter_names_conditions_as_gears_and_drops_those_outside_its_graph(tmp_path):
    from sandbox_helpers import tiny_task

    spec = importlib.util.spec_from_file_location("gears_adapter", ex.ADAPTERS / "gears_adapter.py")
    adapter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(adapter)
    assert adapter.gears_condition([]) == "ctrl" and adapter.gears_condition(["KLF1"]) == "KLF1+ctrl"
    assert adapter.gears_condition(["CEBPA", "KLF1"]) == "CEBPA+KLF1"
    d = adapter.load(tiny_task(tmp_path / "task"))
    train = d["meta"]["train_conditions"]
    perts = sorted(c for c in train if c != d["meta"]["control_label"])
    a, dropped = adapter.training_adata(d, in_go=set(perts[1:]))
    assert dropped == [perts[0]]  # its gene has no GO terms: GEARS's load() drops it too
    conds = set(a.obs["condition"])
    assert conds == {"ctrl"} | {f"{p}+ctrl" for p in perts[1:]}
    assert (a.obs["condition"] == "ctrl").sum() == len(d["controls"]["X"])  # every control cell, as input
    assert list(a.var["gene_name"]) == d["meta"]["genes"] and a.n_vars == len(d["meta"]["genes"])
    split = adapter.split_dict(list(a.obs["condition"]), seed=0)
    assert split["train"][0] == "ctrl" and not set(split["train"]) & set(split["val"]) and split["test"] == []
    assert set(split["train"]) | set(split["val"]) == conds and len(split["val"]) >= 1
