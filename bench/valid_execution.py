"""Valid-execution benchmark (our version of the paper's Table 2).

Runs the full pipeline (``harmonycell run``: builtin policies, search budget 1) over every real
dataset in ../shared/data/real and over schema-noise variants of them generated here (renamed
columns, aliased control labels, guide-level + gene-level columns, unnormalised values, Ensembl
vs symbols, GEARS ``A+ctrl`` combinations, cell-type columns renamed, one input on CP10k, ...),
plus inputs that do not carry the information a run needs (a duplicate input, two species, an
all-zero matrix, data logged twice, numeric gene names, no controls, one perturbation only).

Each trial is classified:
- ``valid``: exit 0, verdict.json says valid, and the host scored the test predictions;
- ``refused``: exit 2 with one clear line on stderr and no run folder (expected for the
  inputs that lack the information: counted separately);
- failures, as the paper counts them: ``preprocessing error`` (the run stopped before a unified
  dataset existed, or refused an input that carries the information), ``model error`` (stopped
  after unification), ``hallucinated success`` (said VALID without a valid, host-scored verdict).

Variants are built from subsamples of the real files (a few thousand cells) so the whole
benchmark runs in well under an hour on 2 cores; the six real files themselves run whole.

    python bench/valid_execution.py [--epochs 3] [--only NAME ...] [--work DIR]

    python bench/valid_execution.py --conventions 12   # sampled label conventions per control class

Writes bench/results/valid_execution.json and .md. Trials are cached in the work folder, so an
interrupted benchmark resumes where it stopped (delete the folder to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
RESULTS = ROOT / "bench" / "results"
N_SUB = 1200


def real(name: str) -> Path:
    return REAL / f"{name}.h5ad"


def read(name: str, n: int | None = N_SUB, seed: int = 0) -> ad.AnnData:
    a = ad.read_h5ad(real(name))
    if n is not None and a.n_obs > n:
        a = a[np.sort(np.random.default_rng(seed).choice(a.n_obs, n, replace=False))].copy()
    a.uns = {}
    a.obsm = {}
    a.obsp = {}
    a.varm = {}
    return a


def dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def cp10k(a: ad.AnnData) -> ad.AnnData:
    """Counts (or expm1 of logs) rescaled to 10,000 per cell, not logged."""
    X = dense(a.X).astype(np.float64)
    if not np.allclose(X, np.round(X)):
        X = np.expm1(X)
    X = X / np.maximum(X.sum(1, keepdims=True), 1e-9) * 1e4
    a.X = sp.csr_matrix(X.astype(np.float32))
    return a


def relabel(a: ad.AnnData, col: str, mapping: dict) -> ad.AnnData:
    a.obs[col] = a.obs[col].astype(str).replace(mapping)
    return a


def rename(a: ad.AnnData, **names) -> ad.AnnData:
    a.obs = a.obs.rename(columns=names)
    return a


def keep_cols(a: ad.AnnData, cols: list[str]) -> ad.AnnData:
    a.obs = a.obs[cols].copy()
    return a


# --- variants: name -> (builder of one or more AnnData, task, expected outcome) ----------------
def pap() -> ad.AnnData:
    return keep_cols(read("papalexi_eccite_lowmoi"), ["perturbation", "grna", "bio_rep"])


def guide_gene(a: ad.AnnData, drop_gene: bool) -> ad.AnnData:
    g = a.obs["perturbation"].astype(str).replace({"non-targeting": "NonTargetingControlGuide"})
    num = a.obs["grna"].astype(str).str.extract(r"(\d+)$", expand=False).fillna("1").astype(int)
    guide = [f"{x}_sgRNA_{n:02d}" for x, n in zip(g, num)]
    nan = np.random.default_rng(1).random(a.n_obs) < 0.05
    gene = pd.Series(g.to_numpy(), index=a.obs_names, dtype=object)
    guide = pd.Series(guide, index=a.obs_names, dtype=object)
    gene[nan], guide[nan] = np.nan, np.nan
    a.obs = pd.DataFrame({"guide_identity": guide} if drop_gene else {"guide_identity": guide, "gene": gene},
                         index=a.obs_names)
    return a


def case_mix(a: ad.AnnData, col: str) -> ad.AnnData:
    v = a.obs[col].astype(str).to_numpy(dtype=object)
    lower = np.random.default_rng(2).random(len(v)) < 0.3
    v[lower] = [x if x in ("control", "non-targeting", "ctrl") else x.lower() for x in v[lower]]
    a.obs[col] = v
    return a


def norman() -> ad.AnnData:
    return keep_cols(read("norman_mcfaline_perturbench_devel", n=None), ["condition", "cell_type", "dataset"])


def gears_style(a: ad.AnnData) -> ad.AnnData:
    c = a.obs["condition"].astype(str)
    a.obs["condition"] = [("ctrl" if x == "control" else x if "+" in x else f"{x}+ctrl") for x in c]
    return a


def kang(n=None) -> ad.AnnData:
    return keep_cols(read("kang_scgen_valid", n=n), ["condition", "cell_type"])


def muscat(n=None) -> ad.AnnData:
    return keep_cols(read("kang_muscat_example", n=n), ["group_id", "cluster_id", "sample_id"])


def mouse_case(a: ad.AnnData) -> ad.AnnData:
    a.var_names = [v.capitalize() for v in a.var_names]
    return a


def log_again(a: ad.AnnData) -> ad.AnnData:
    a.X = sp.csr_matrix(np.log1p(dense(a.X)).astype(np.float32))
    return a


def zero_x(a: ad.AnnData) -> ad.AnnData:
    a.X = sp.csr_matrix(a.shape, dtype=np.float32)
    return a


def numeric_genes(a: ad.AnnData) -> ad.AnnData:
    a.var_names = [str(i) for i in range(a.n_vars)]
    a.var = pd.DataFrame(index=a.var_names)
    return a


def gears_symbols() -> ad.AnnData:
    a = read("norman_gears_subset", n=None)
    a.var = a.var.set_index("feature_name")
    a.var.index = a.var.index.astype(str)
    return a


def zhao_symbols() -> ad.AnnData:
    a = read("zhao_glioblastoma_panobinostat")
    a.var = a.var.set_index("symbol")
    a.var.index = a.var.index.astype(str)
    a.var_names_make_unique()
    return a


UP, CTX, COMBO = "unseen-perturbation", "unseen-cell-context", "unseen-combination"
REAL_FILES = {  # every real dataset, whole, with a task it can carry (zhao: one drug, one context)
    "real_kang_scgen": (["kang_scgen_valid"], CTX, "valid"),
    "real_kang_muscat": (["kang_muscat_example"], CTX, "valid"),
    "real_norman_mcfaline": (["norman_mcfaline_perturbench_devel"], UP, "valid"),
    "real_norman_gears": (["norman_gears_subset"], COMBO, "valid"),
    "real_papalexi": (["papalexi_eccite_lowmoi"], UP, "valid"),
    "real_zhao_alone": (["zhao_glioblastoma_panobinostat"], UP, "refused"),
    "real_kang_pair": (["kang_scgen_valid", "kang_muscat_example"], CTX, "valid"),
}
VARIANTS = {
    "pap_renamed_columns": (lambda: [rename(pap(), perturbation="target_gene", bio_rep="replicate")], UP, "valid"),
    "pap_ctrl_NonTargetingControlGuide": (lambda: [relabel(pap(), "perturbation", {"non-targeting": "NonTargetingControlGuide"})], UP, "valid"),
    "pap_ctrl_numbered_mixed": (lambda: [guide_numbered_controls(pap())], UP, "valid"),
    "pap_ctrl_safe_targeting": (lambda: [relabel(pap(), "perturbation", {"non-targeting": "safe-targeting"})], UP, "valid"),
    "pap_ctrl_scrambled": (lambda: [relabel(pap(), "perturbation", {"non-targeting": "scrambled"})], UP, "valid"),
    "pap_ctrl_intergenic": (lambda: [relabel(pap(), "perturbation", {"non-targeting": "intergenic"})], UP, "valid"),
    "pap_guide_and_gene_columns": (lambda: [guide_gene(pap(), drop_gene=False)], UP, "valid"),
    "pap_guide_column_only": (lambda: [guide_gene(pap(), drop_gene=True)], UP, "valid"),
    "pap_cp10k": (lambda: [cp10k(pap())], UP, "valid"),
    "pap_label_case_mixed": (lambda: [case_mix(pap(), "perturbation")], UP, "valid"),
    "pap_cell_line_column": (lambda: [with_col(pap(), "cell", "THP-1")], UP, "valid"),
    "norman_renamed_label": (lambda: [rename(norman(), condition="perturbation_name")], UP, "valid"),
    "norman_gears_a_plus_ctrl": (lambda: [gears_style(norman())], UP, "valid"),
    "norman_celltype_CellType": (lambda: [rename(norman(), cell_type="CellType")], CTX, "valid"),
    "norman_celltype_cluster": (lambda: [rename(norman(), cell_type="cluster")], CTX, "valid"),
    "norman_celltype_cell": (lambda: [rename(norman(), cell_type="cell")], CTX, "valid"),
    "norman_unnormalised_cp10k": (lambda: [cp10k(norman())], UP, "valid"),
    "norman_ctrl_non_targeting": (lambda: [relabel(norman(), "condition", {"control": "non-targeting"})], UP, "valid"),
    "norman_label_case_mixed": (lambda: [case_mix(norman(), "condition")], UP, "valid"),
    "kang_renamed_columns": (lambda: [rename(kang(), condition="stim_status", cell_type="annotation")], CTX, "valid"),
    "kang_ctrl_unstim": (lambda: [relabel(kang(), "condition", {"control": "unstim", "stimulated": "stim"})], CTX, "valid"),
    "kang_cp10k": (lambda: [cp10k(kang())], CTX, "valid"),
    "kang_pair_one_on_cp10k": (lambda: [cp10k(kang()), muscat()], CTX, "valid"),
    "muscat_celltype_cell": (lambda: [rename(muscat(), cluster_id="cell")], CTX, "valid"),
    "muscat_celltype_annotation": (lambda: [rename(muscat(), cluster_id="annotation")], CTX, "valid"),
    "gears_symbols_index": (lambda: [gears_symbols()], COMBO, "valid"),
    "gears_ctrl_control": (lambda: [relabel(read("norman_gears_subset", n=None), "condition", {"ctrl": "control"})], UP, "valid"),
    "zhao_symbols_with_kang": (lambda: [zhao_symbols(), kang(1500)], CTX, "valid"),
    # inputs without the information a run needs: a clear refusal is the right answer
    "refuse_duplicate_input": (lambda: "duplicate", UP, "refused"),
    "refuse_mouse_with_human": (lambda: [mouse_case(pap()), pap_other_half()], UP, "refused"),
    "refuse_all_zero": (lambda: [zero_x(pap())], UP, "refused"),
    "refuse_logged_twice": (lambda: [log_again(norman())], UP, "refused"),
    "refuse_numeric_gene_names": (lambda: [numeric_genes(pap())], UP, "refused"),
    "refuse_no_controls": (lambda: [keep_cols(relabel(pap(), "perturbation", {"non-targeting": "TP53"}),
                                              ["perturbation", "bio_rep"])], UP, "refused"),
}


def guide_numbered_controls(a: ad.AnnData) -> ad.AnnData:
    num = a.obs["grna"].astype(str).str.extract(r"(\d+)$", expand=False).fillna("1")
    ctl = a.obs["perturbation"].astype(str) == "non-targeting"
    a.obs["perturbation"] = np.where(ctl, np.where(num.astype(int) % 2 == 0, "non-targeting_" + num, "NT_" + num),
                                     a.obs["perturbation"].astype(str))
    return a


def with_col(a: ad.AnnData, name: str, value: str) -> ad.AnnData:
    a.obs[name] = value
    return a


def pap_other_half() -> ad.AnnData:
    return keep_cols(read("papalexi_eccite_lowmoi", seed=1), ["perturbation", "grna", "bio_rep"])


def build(name: str, work: Path) -> tuple[list[Path], str, str]:
    if name in REAL_FILES:
        names, task, expect = REAL_FILES[name]
        return [real(n) for n in names], task, expect
    make, task, expect = VARIANTS[name]
    folder = work / "inputs" / name
    done = folder / ".complete"
    if name == "refuse_duplicate_input":
        return [real("norman_mcfaline_perturbench_devel")] * 2, task, expect
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i, a in enumerate(make()):
            a.write_h5ad(folder / f"{name}_{i}.h5ad")
        done.touch()
    return sorted(folder.glob("*.h5ad")), task, expect


def classify(rc: int, stdout: str, stderr: str, runs: Path, expect: str) -> tuple[str, str]:
    folders = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    message = lines[-1] if lines else ""
    traceback = "Traceback (most recent call last)" in stderr
    if rc == 2 and not traceback and not folders:
        return ("refused" if expect == "refused" else "preprocessing error (refused at the door)"), message
    run = folders[0] if folders else None
    verdict = json.loads((run / "verdict.json").read_text()) if run and (run / "verdict.json").exists() else None
    said_valid = "VALID --" in stdout and "INVALID" not in stdout
    scored = bool(run and list(run.glob("nodes/*/test_scores.json")))
    if rc == 0 and verdict and verdict.get("valid") and scored:
        return "valid", "VALID"
    if said_valid:
        return "hallucinated success", "said VALID without a valid, host-scored verdict"
    unified = bool(run and (run / "unify" / "unified.h5ad").exists())
    if not unified:
        return "preprocessing error", message or f"exit {rc}"
    return "model error", message or (f"exit {rc}; verdict invalid" if verdict else f"exit {rc}")


def run_trial(name: str, work: Path, epochs: int) -> dict:
    cache = work / "trials" / f"{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    files, task, expect = build(name, work)
    runs = work / "runs" / name
    shutil.rmtree(runs, ignore_errors=True)
    cmd = [sys.executable, "-m", "harmonycell.agents.cli", "run", *map(str, files), "--task", task,
           "--out", str(runs), "--budget", "1", "--epochs", str(epochs), "--backend", "local", "--seed", "0"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - t0
    outcome, message = classify(p.returncode, p.stdout, p.stderr, runs, expect)
    rec = {"trial": name, "task": task, "inputs": [f.name for f in files], "expected": expect,
           "outcome": outcome, "exit_code": p.returncode, "message": message[:400], "seconds": round(seconds, 1)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rec, indent=1))
    shutil.rmtree(runs, ignore_errors=True)  # run folders are large; the record is kept
    return rec


def summarise(records: list[dict], wall: float, epochs: int) -> dict:
    carry = [r for r in records if r["expected"] == "valid"]
    lack = [r for r in records if r["expected"] == "refused"]
    fails: dict[str, int] = {}
    for r in carry:
        if r["outcome"] != "valid":
            fails[r["outcome"]] = fails.get(r["outcome"], 0) + 1
    return {
        "trials": len(records), "wall_seconds": round(wall, 1), "epochs": epochs, "budget": 1,
        "policies": "builtin", "backend": "local",
        "carry_information": len(carry), "valid_execution": sum(r["outcome"] == "valid" for r in carry),
        "valid_execution_rate": round(sum(r["outcome"] == "valid" for r in carry) / max(len(carry), 1), 3),
        "failures_by_class": fails,
        "lack_information": len(lack), "clear_refusals": sum(r["outcome"] == "refused" for r in lack),
        "records": records,
    }


def markdown(s: dict) -> str:
    lines = [
        "# Valid execution (full pipeline, builtin policies, budget 1)", "",
        f"- {s['trials']} trials, {s['epochs']} epochs max per node, backend {s['backend']}, at nice 10 on a 2-core "
        f"machine shared with other jobs (loaded: one small run took 1-13 min); "
        + (f"wall time of this invocation {s['wall_seconds'] / 60:.1f} min ({s['jobs']} trial(s) at once)"
           if s["wall_seconds"] is not None else "assembled from cached trials (up to 4 ran at once)"),
        f"- sum of per-trial wall times: {s['trial_seconds_sum'] / 60:.1f} min",
        f"- inputs that carry the information: {s['valid_execution']}/{s['carry_information']} valid "
        f"({s['valid_execution_rate']:.1%}); failures by class: {s['failures_by_class'] or 'none'}",
        f"- inputs that lack it: {s['clear_refusals']}/{s['lack_information']} clear refusals (exit 2, one line, no run folder)",
        "", "| trial | task | expected | outcome | exit | s | message |", "|---|---|---|---|---|---|---|"]
    for r in s["records"]:
        msg = r["message"].replace("|", "\\|")[:160]
        lines.append(f"| {r['trial']} | {r['task']} | {r['expected']} | {r['outcome']} | {r['exit_code']} | {r['seconds']} | {msg} |")
    return "\n".join(lines) + "\n"


# --- label conventions: a generator that samples how screens write each control class ----------
# Written from how screens and papers name their negative controls, not from the rules in
# tools/data/labels.py: base phrases per class, then token-level variations (case, separators,
# CamelCase joins, species words, guide/replicate suffixes, a 'control' word) sampled at random.
# Each trial relabels a real file's controls (and, for screens, writes its targets per guide in a
# sampled convention) and is valid when unify finds exactly the controls and the genes.
CONVENTION_PHRASES = {
    "non-targeting": [["non", "targeting"], ["nontargeting"], ["NT"], ["NTC"], ["non", "target"],
                      ["negative", "control"], ["neg", "ctrl"], ["no", "target"], ["NonTarget"], ["NTG"]],
    "scrambled": [["scrambled"], ["scramble"], ["scr"], ["shuffled"], ["scrambled", "control"], ["SCRMBL"]],
    "safe-harbour": [["AAVS1"], ["ROSA26"], ["Rosa26"], ["safe", "harbor"], ["safe", "harbour"],
                     ["safe", "targeting"], ["intergenic"], ["H11"], ["AAVS"]],
    "reporter": [["LacZ"], ["GFP"], ["EGFP"], ["luciferase"], ["Luc"], ["mCherry"], ["tdTomato"], ["RFP"],
                 ["Renilla"], ["FLuc"]],
    "empty-vector": [["empty", "vector"], ["empty"], ["pLKO", "empty"], ["EV"], ["no", "insert"], ["backbone"],
                     ["empty", "backbone"]],
    "vehicle": [["vehicle"], ["DMSO"], ["PBS"], ["EtOH"], ["vehicle", "DMSO"], ["H2O"], ["solvent"]],
    "untreated": [["untreated"], ["mock"], ["no", "treatment"], ["naive"], ["parental"], ["un", "treated"]],
    "unstimulated": [["unstimulated"], ["unstim"], ["resting"], ["no", "stim"], ["un", "stimulated"]],
}
CRISPR_CLASSES = ("non-targeting", "scrambled", "safe-harbour", "reporter", "empty-vector")
SPECIES = ["Hs", "Human", "hs", "Mm", "human"]
GUIDE_SUFFIXES = ["_g{n}", "-sg{n}", "_sgRNA_{n}", ".{n}", "g{n}", "_{n}", "-{n}", "_guide{n}", "#{n}"]
TARGET_STYLES = ["{g}", "{g}_g{n}", "sg{g}-{n}", "{g}.sg{n}", "{g}_sgRNA_{n:02d}", "{g}-{n}", "sg{g}_{n}"]


def sample_spelling(cls: str, rng: np.random.Generator) -> str:
    words = list(CONVENTION_PHRASES[cls][rng.integers(len(CONVENTION_PHRASES[cls]))])
    if cls in CRISPR_CLASSES and rng.random() < 0.3:
        words.append(["control", "ctrl", "Ctrl", "guide"][rng.integers(4)])
    if cls in CRISPR_CLASSES and rng.random() < 0.3:
        words.append(SPECIES[rng.integers(len(SPECIES))])
    case = rng.integers(4)
    if case == 0:
        words = [w.lower() for w in words]
    elif case == 1:
        words = [w.upper() for w in words]
    elif case == 2:
        words = [w[:1].upper() + w[1:] for w in words]
    sep = ["", "_", "-", " ", "."][rng.integers(5)] if len(words) > 1 else ""
    label = sep.join(words)
    if cls in CRISPR_CLASSES and rng.random() < 0.6:
        label += GUIDE_SUFFIXES[rng.integers(len(GUIDE_SUFFIXES))].format(n=int(rng.integers(1, 10)))
    if cls in CRISPR_CLASSES and rng.random() < 0.2:
        label = "sg" + label
    return label


def convention_trial(cls: str, k: int, work: Path) -> dict:
    """One sampled convention of class ``cls`` written into a real file, unified."""
    from harmonycell.tools.data.unify import unify
    from harmonycell.tools.errors import HarmonyCellError

    rng = np.random.default_rng([k, sorted(CONVENTION_PHRASES).index(cls)])
    spellings = list(dict.fromkeys(sample_spelling(cls, rng) for _ in range(int(rng.integers(1, 4)))))
    if cls in CRISPR_CLASSES:
        a = keep_cols(read("papalexi_eccite_lowmoi", n=800, seed=k), ["perturbation", "grna"])
        truth = a.obs["perturbation"].astype(str)
        ctl = (truth == "non-targeting").to_numpy()
        style = TARGET_STYLES[rng.integers(len(TARGET_STYLES))]
        num = a.obs["grna"].astype(str).str.extract(r"(\d+)$", expand=False).fillna("1").astype(int)
        labels = [style.format(g=g, n=n) for g, n in zip(truth, num)]
        expect_perturbed = set(truth[~ctl])
        col = "guide" if "{n" in style else "perturbation"
        a.obs = pd.DataFrame({col: labels}, index=a.obs_names)
    elif cls == "unstimulated":
        a = kang(n=800)
        truth = a.obs["condition"].astype(str)
        ctl = (truth == "control").to_numpy()
        style, col, labels = "{g}", "condition", list(truth)
        expect_perturbed = {"stimulated"}
    else:  # vehicle, untreated: the drug screen
        a = keep_cols(read("zhao_glioblastoma_panobinostat", n=800, seed=k), ["condition", "patient_id"])
        truth = a.obs["condition"].astype(str)
        ctl = (truth == "ctrl").to_numpy()
        style, col, labels = "{g}", "condition", list(truth)
        expect_perturbed = {"panobinostat"}
    for i, j in enumerate(np.flatnonzero(ctl)):
        labels[j] = spellings[i % len(spellings)]
    a.obs[col] = labels
    path = work / "conventions" / f"{cls}_{k}.h5ad"
    path.parent.mkdir(parents=True, exist_ok=True)
    a.write_h5ad(path)
    rec = {"class": cls, "trial": k, "spellings": spellings, "targets": style, "expected_controls": int(ctl.sum())}
    try:
        o = unify([path])
    except HarmonyCellError as e:
        return {**rec, "outcome": "refused", "message": e.one_line()[:300]}
    finally:
        path.unlink(missing_ok=True)
    r = o.report.inputs[0]
    got = set(o.adata.obs.loc[~o.adata.obs["is_control"], "condition_name"].astype(str))
    if r.controls != int(ctl.sum()):
        return {**rec, "outcome": "wrong controls", "message": f"{r.controls} controls found, {int(ctl.sum())} expected"}
    if got != expect_perturbed:
        return {**rec, "outcome": "wrong perturbations",
                "message": f"{len(got)} perturbations ({', '.join(sorted(got)[:4])}...), {len(expect_perturbed)} expected"}
    proposed = "PROPOSED control" in r.fields["condition_name"].reason
    return {**rec, "outcome": "proposed" if proposed else "valid", "message": ""}


def run_conventions(per_class: int, work: Path) -> dict:
    t0 = time.perf_counter()
    records = [convention_trial(cls, k, work) for cls in CONVENTION_PHRASES for k in range(per_class)]
    rates = {}
    for cls in CONVENTION_PHRASES:
        rs = [r for r in records if r["class"] == cls]
        rates[cls] = {"trials": len(rs), "valid": sum(r["outcome"] == "valid" for r in rs),
                      "proposed": sum(r["outcome"] == "proposed" for r in rs),
                      "failed": sum(r["outcome"] not in ("valid", "proposed") for r in rs)}
        rates[cls]["valid_rate"] = round(rates[cls]["valid"] / max(len(rs), 1), 3)
    return {"per_class": per_class, "seconds": round(time.perf_counter() - t0, 1), "rates": rates,
            "records": records}


def conventions_markdown(c: dict) -> str:
    lines = ["", "## Label conventions (unify stage; sampled spellings of each control class)", "",
             f"{c['per_class']} sampled conventions per class, each written into a real file (Papalexi for the "
             "screen classes, targets per guide in a sampled style; Zhao for vehicle/untreated; Kang for "
             "unstimulated) and unified; valid = exactly the relabelled cells are controls and the perturbations "
             "are the file's genes/drug/stimulus; proposed = unified right with the control proposed, not known; "
             f"{c['seconds']:.0f} s.", "",
             "| class | trials | valid | proposed | failed | valid rate |", "|---|---|---|---|---|---|"]
    for cls, r in c["rates"].items():
        lines.append(f"| {cls} | {r['trials']} | {r['valid']} | {r['proposed']} | {r['failed']} | {r['valid_rate']:.0%} |")
    bad = [r for r in c["records"] if r["outcome"] != "valid"]
    if bad:
        lines += ["", "Not valid:", ""]
        lines += [f"- {r['class']} {r['spellings']} (targets `{r['targets']}`): {r['outcome']} -- {r['message'][:200]}"
                  for r in bad]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="trial names (default: all)")
    ap.add_argument("--work", type=Path, default=RESULTS / "cache" / "valid_execution")
    ap.add_argument("--jobs", type=int, default=1, help="trials run at once (each is its own process tree)")
    ap.add_argument("--cached-only", action="store_true",
                    help="write the results from the trials already run (the others are listed as not run)")
    ap.add_argument("--conventions", type=int, metavar="N", default=0,
                    help="instead of the pipeline trials: N sampled label conventions per control class, unified; "
                         "their per-class rates are added to the results (the pipeline trials are kept)")
    args = ap.parse_args()
    if args.conventions:
        c = run_conventions(args.conventions, args.work)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / "valid_execution.json"
        s = json.loads(path.read_text()) if path.exists() else {}
        s["conventions"] = c
        path.write_text(json.dumps(s, indent=1) + "\n")
        md = RESULTS / "valid_execution.md"
        old = md.read_text().split("\n## Label conventions")[0].rstrip("\n") + "\n" if md.exists() else ""
        md.write_text(old + conventions_markdown(c))
        print(conventions_markdown(c))
        return
    names = args.only or [*REAL_FILES, *VARIANTS]
    if args.cached_only:
        cache = args.work / "trials"
        done = [n for n in names if (cache / f"{n}.json").exists()]
        records = [json.loads((cache / f"{n}.json").read_text()) for n in done]
        s = summarise(records, 0.0, args.epochs)
        s.update(jobs=args.jobs, wall_seconds=None, trial_seconds_sum=round(sum(r["seconds"] for r in records), 1),
                 not_run=[n for n in names if n not in done])
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "valid_execution.json").write_text(json.dumps(s, indent=1) + "\n")
        text = markdown(s) + (f"\nNot run yet (time ran out; `python bench/valid_execution.py` resumes them): "
                              f"{', '.join(s['not_run'])}\n" if s["not_run"] else "")
        (RESULTS / "valid_execution.md").write_text(text)
        print(text)
        return
    t0 = time.perf_counter()
    for n in names:  # inputs are built first, one at a time (they share the real files)
        build(n, args.work)
    from concurrent.futures import ThreadPoolExecutor

    def one(n: str) -> dict:
        r = run_trial(n, args.work, args.epochs)
        print(f"{r['trial']:40s} {r['expected']:8s} -> {r['outcome']:28s} {r['seconds']:7.1f}s  {r['message'][:100]}", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        records = list(pool.map(one, names))
    wall = time.perf_counter() - t0
    s = summarise(records, wall, args.epochs)
    s["jobs"] = args.jobs
    s["trial_seconds_sum"] = round(sum(r["seconds"] for r in records), 1)
    if not args.only:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / "valid_execution.json"
        old = json.loads(path.read_text()).get("conventions") if path.exists() else None
        if old:  # the label-convention rates are measured by --conventions, kept here
            s["conventions"] = old
        path.write_text(json.dumps(s, indent=1) + "\n")
        (RESULTS / "valid_execution.md").write_text(markdown(s) + (conventions_markdown(old) if old else ""))
    print(markdown(s))
    print(f"(this invocation: {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
