"""The expert benchmark's pure parts (the real run: bench/experts.py): registries, the rows of an
expert that cannot run here, the analysis the doc is computed from (each query once over folds
and seeds, sign-flip tests, experts against the pick), merging a new result into the committed
ones, and GEARS's GO files built from the gene database. No expert is installed or trained here."""

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
from harmonycell.tools.evaluation.metrics import FALLBACK_METRIC, SEARCH_METRIC
from harmonycell.tools.genes.db import GeneDB

# real genes of the Norman screen: erythroid (KLF1, GATA1, TAL1), myeloid (CEBPA, CEBPB, SPI1), and others
NORMAN_GENES = ["KLF1", "GATA1", "TAL1", "CEBPA", "CEBPB", "SPI1", "CBL", "CNN1", "FOXA1", "FOXA3", "JUN",
                "FOSB", "MAPK1", "ETS2", "SET", "DUSP9", "BAK1", "IRF1"]


def rows(values, names, headline=True):
    """Per-query rows as the bench stores them: one query per (value, name)."""
    return [{"condition": n, "context": "c0",
             "metrics": {SEARCH_METRIC: v if headline else None, FALLBACK_METRIC: v, "DeltaPCC": v, "RMSE": 1.0 - v}}
            for v, n in zip(values, names)]


def task_result(seeds=(0, 1), pick=None, expert=None, base=None, **extra):
    """A task result of 2 folds per seed over 12 genes; each seed partitions the genes differently
    (as a split seed does), so every gene is tested once per seed."""
    genes = [f"G{i}" for i in range(12)]
    pick = pick or (lambda g: 0.5 + 0.01 * (int(g[1:]) % 3))
    expert = expert or (lambda g: 0.8)
    base = base or (lambda g: 0.5 + (0.02 if int(g[1:]) % 2 else -0.02))
    per_fold = []
    for seed in seeds:
        order = genes[seed:] + genes[:seed]
        for k in range(2):
            held = order[6 * k: 6 * k + 6]
            entries = {ex.PICK: {"status": "ok", "rows": rows([pick(g) for g in held], held), "action": "simple/ridge",
                                 "wall_s": 10.0},
                       "control_mean": {"status": "ok", "rows": rows([0.5] * 6, held)},
                       "train_mean": {"status": "ok", "rows": rows([base(g) for g in held], held)},
                       "biolord": {"status": "ok", "rows": rows([expert(g) for g in held], held), "wall_s": 20.0 + 10 * k,
                                   "peak_rss_mb": 600 + k, "load_before": 1.2 if k else 0.4},
                       "gears": {"status": "not applicable", "reason": ex.EXPERTS["gears"].not_for}}
            per_fold.append({"seed": seed, "fold": k, "run": f"cv-s{seed}/repeat0-fold{k}", "n_queries": 6,
                             "verdict": {}, "ceiling": {SEARCH_METRIC: 0.95, FALLBACK_METRIC: 0.9, "DeltaPCC": 0.9,
                                                        "RMSE": 0.1}, "entries": entries})
    return {"task": "papalexi", "title": "T", "kind": "unseen-perturbation", **ex.Settings().key(),
            "backend": "bwrap", "kb": "", "finished": "now",
            "profile": "p", "scope": {"dataset": "d", "test_units": genes}, "per_fold": per_fold, **extra}


def test_every_expert_has_an_adapter_file_or_a_stated_reason_and_every_task_a_real_input(real_data):
    for name, e in ex.EXPERTS.items():
        if e.adapter is None:
            assert len(e.why_not) > 40, name  # the exact reason, not a word
        else:
            assert (ex.ADAPTERS / e.adapter).is_file(), name
            assert all("==" in r for r in e.requirements), name  # pinned, so the venv is reproducible
        assert e.kinds is None or (set(e.kinds) <= set(KINDS) and len(e.not_for) > 40), name
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


def test_a_task_is_the_projects_own_fold_run_without_the_knowledge_base():
    s = ex.Settings()
    cmd = ex.run_command(ex.TASKS["papalexi"], 2, s, ex.CACHE / "x")
    assert cmd[cmd.index("--folds") + 1] == "3" and "--no-kb" in cmd and cmd[cmd.index("--seed") + 1] == "2"
    assert cmd[cmd.index("--time-limit") + 1] == s.time_limit and cmd[cmd.index("--budget") + 1] == str(s.budget)
    # runs of other settings are never reused for these
    assert ex.runs_root(ex.TASKS["papalexi"], 0, s) != ex.runs_root(ex.TASKS["papalexi"], 0, ex.Settings(epochs=60))


def test_each_query_counts_once_over_folds_and_seeds_and_an_expert_is_compared_with_the_pick():
    res = task_result()
    a = ex.analyse(res)
    assert a["seeds"] == [0, 1] and a["decides"] == SEARCH_METRIC
    c = a["vs_pick"]["biolord"]
    # 12 genes, each tested once per seed: 12 units, not 24; every one better (exact p = 2/2^12)
    assert c.n == 12 and c.conclusion == "better" and c.ci_low > 0
    useful, deciding = a["useful"]["biolord"]
    assert useful and deciding["control_mean"].n == 12 and deciding["train_mean"].conclusion == "better"
    # the pick differs from train_mean by +-0.02 noise: not better than every baseline
    assert not a["useful"][ex.PICK][0] and a["useful"][ex.PICK][1]["train_mean"].conclusion != "better"
    assert a["vs_pick"]["gears"] is None and a["cv"][ex.PICK].spread["noise_ceiling"][SEARCH_METRIC].mean == 0.95


def test_a_worse_expert_and_an_expert_missing_in_a_fold_are_said_so():
    res = task_result(expert=lambda g: 0.2)
    res["per_fold"][1]["entries"]["biolord"] = {"status": "failed", "reason": "out of memory", "wall_s": 5.0}
    a = ex.analyse(res)
    c = a["vs_pick"]["biolord"]
    # the fold it failed in drops its 6 genes for seed 0, but seed 1 tested them: still 12 units
    assert c.conclusion == "worse" and c.n == 12
    assert ex.status_of(res, "biolord") == ("ok in 3 of 4 folds", "out of memory")
    assert ex.status_of(res, "gears") == ("not applicable", ex.EXPERTS["gears"].not_for)
    res = task_result()
    del res["per_fold"][3]["entries"]["biolord"]  # a seed run later without it
    status, why = ex.status_of(res, "biolord")
    assert status == "ok in 3 of 4 folds" and "left out of the invocation" in why
    assert ex.analyse(res)["vs_pick"]["biolord"].n == 12  # its genes were tested in seed 0


def test_an_undefined_headline_is_not_applicable_and_its_fallback_decides():
    res = task_result()
    for f in res["per_fold"]:
        for e in f["entries"].values():
            for r in e.get("rows", []):
                r["metrics"][SEARCH_METRIC] = None  # one query per context: no discrimination among queries
    a = ex.analyse(res)
    assert a["decides"] == FALLBACK_METRIC and a["vs_pick"]["biolord"].metric == FALLBACK_METRIC
    assert a["useful"]["biolord"][0]  # decided on the fallback, never on an undefined value counted as 0
    # undefined on every pair: no comparison on it at all, so it counts in no correction
    assert not [c for c in a["cv"]["biolord"].comparisons if c.metric == SEARCH_METRIC]
    assert [c for c in a["cv"]["biolord"].comparisons if c.metric == FALLBACK_METRIC]


def test_a_new_run_merges_into_its_folds_and_other_settings_replace():
    old = {"machine": "m", "install": {"cpa": "cannot run here"}, "tasks": [task_result()], "finished": "a"}
    gears_only = task_result(seeds=(0,))
    for f in gears_only["per_fold"]:
        f["entries"] = {"gears": {"status": "failed", "reason": "r"}}
    merged = ex.merge_results(old, {"machine": "m", "install": {"gears": "installed"}, "tasks": [gears_only],
                                    "finished": "b"})
    (t,) = merged["tasks"]
    assert [(f["seed"], f["fold"]) for f in t["per_fold"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # seed 0's folds keep the predictors this run did not run, and take its gears
    assert set(t["per_fold"][0]["entries"]) == {ex.PICK, "control_mean", "train_mean", "biolord", "gears"}
    assert t["per_fold"][0]["entries"]["gears"]["status"] == "failed" and "gears" in t["per_fold"][2]["entries"]
    assert merged["install"] == {"cpa": "cannot run here", "gears": "installed"} and merged["finished"] == "b"
    other = ex.merge_results(merged, {"machine": "m", "install": {}, "tasks": [task_result(seeds=(0,), epochs=60)],
                                      "finished": "c"})
    assert len(other["tasks"][0]["per_fold"]) == 2  # other settings: replaced, never mixed
    kang = ex.merge_results(merged, {"machine": "m", "install": {}, "tasks": [{**task_result(), "task": "kang"}],
                                     "finished": "c"})
    assert [r["task"] for r in kang["tasks"]] == ["papalexi", "kang"]


def test_only_an_expert_that_beat_our_pick_and_has_a_backbone_of_ours_is_a_win():
    res = task_result()
    (w,) = ex.expert_wins(res)
    assert w["expert"] == "biolord" and w["backbone"] == "discriminative/attribute-decoder"
    assert w["metric"] == SEARCH_METRIC and w["n"] == 12 and w["lo"] > 0
    assert ex.expert_wins(task_result(expert=lambda g: 0.51)) == []  # tied with the pick: no win
    # a baseline better than the pick is not an expert win
    assert ex.expert_wins(task_result(expert=lambda g: 0.2, base=lambda g: 0.9)) == []


def test_the_doc_shows_the_ceiling_the_verdicts_and_the_reasons_and_the_csv_every_fold():
    text = ex.render({"machine": "m", "finished": "f", "install": {"biolord": "installed in its own venv"},
                      "tasks": [task_result()]})
    assert "| noise_ceiling (positive control) | ok | 0.950 ± 0.000 |" in text
    assert "| HarmonyCell's pick (simple/ridge) | ok |" in text
    assert "| biolord | ok | 0.800 ± 0.000 |" in text and "| gears | not applicable: GEARS predicts" in text
    # wall: the mean per fold, with the loads it was measured at; peak: the largest fold's
    assert "| 25 (0.40-1.20) | 601 |" in text
    assert "Better than every baseline on Discrimination_score: biolord. Better than HarmonyCell's pick: biolord." in text
    assert ("HarmonyCell's pick is not better than every baseline; experts better than it: biolord; "
            "experts better than every baseline: biolord.") in text
    res = task_result()
    res["per_fold"][0]["entries"][ex.PICK] = {"status": "failed", "reason": "nothing was picked and tested"}
    text = ex.render({"machine": "m", "finished": "f", "install": {}, "tasks": [res]})
    assert "1 fold(s) had no pick." in text and "| HarmonyCell's pick (simple/ridge) | ok in 3 of 4 folds" in text
    table = list(csv.DictReader(io.StringIO(ex.fold_csv({"tasks": [task_result()]}))))
    assert len(table) == 4 * 5 and {r["seed"] for r in table} == {"0", "1"}
    assert all(abs(float(r[SEARCH_METRIC]) - 0.8) < 1e-9 for r in table if r["model"] == "biolord")
    assert all(r[SEARCH_METRIC] == "" for r in table if r["model"] == "gears")


def test_the_committed_doc_is_the_rendering_of_the_committed_results():
    assert ex.DOC.read_text() == ex.render(json.loads(ex.RESULTS.read_text()))


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
