"""Retrospective acquisition benchmark: does choosing what to measure beat choosing at random?

    nice -n 10 python bench/acquisition.py [--quick] [--data ../shared/data/real] [--out bench/results]

Setting (SPEC section 11, scaled to this machine). A *world* is a pool of single-gene
perturbations whose measured pseudo-bulk effects are known, each gene with an embedding (its
loadings on the top principal components of *control* cells' expression, so that no
perturbation's outcome leaks into the choice). A fixed test set is held out; a few random
perturbations start the acquired set; then each round every method acquires ``b`` more from the
pool, the predictor (ridge regression from embedding to effect, ``tools.planning.ensemble``) is
refitted on what was acquired, and its test MSE (mean over test perturbations and genes) is
recorded. Score: area under that learning curve (trapezoid, divided by the number of rounds, so
it is a mean test MSE; lower is better), over all test perturbations and, where the world
defines pathways, over the test perturbations of pathway genes.

Methods: ``random`` (10 independent draws; their mean is the reference); ``bald`` (BALD-style:
the b most uncertain); ``iterpert`` (IterPert-style: u / max u - 0.5 x largest |cosine| to an
acquired gene); ``ours`` (the product's builtin re-rank: greedy over the top-200 shortlist with
diversity against acquired and already-picked genes, plus gene-set coverage with a cap when the
world has gene sets); ``ours_nosets`` (the same re-rank without the gene sets, so that what
the gene-set file adds is visible on its own); ``null`` (an 11th random draw treated as a method: its interval must cover
0). Uncertainty for every method: the product's bootstrap ridge ensemble (10 members).

Reported per world family: each method's AUC minus the mean AUC of the random draws, averaged
over replicates (world seed x test split), with a seeded 95% bootstrap interval over replicates,
and a conclusion (better / worse / indistinguishable from random).

Worlds:
- ``synthetic-*``: genes in co-expressed pathways (visible in control cells), perturbing a
  pathway gene shifts its pathway's targets with a pathway-specific strength, background genes
  only knock themselves down; noisy pseudo-bulk measurements. ``clear``: strong co-expression;
  ``faint``: co-expression barely above noise, so embeddings say little.
- real data, unified by the product's own ``unify``: every single-gene perturbation of a gene the
  data measure (only those have an embedding). A dataset with fewer than ``MIN_REAL_POOL`` such
  perturbations is listed as skipped, with its counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harmonycell.tools.planning.ensemble import (EMBED_PCS, MEMBERS, bootstrap_ensemble, epistemic_uncertainty,
                                                 fit_ridge, gene_embeddings, measured_effects)
from harmonycell.tools.planning.pathways import default_cap
from harmonycell.tools.planning.rerank import (SHORTLIST_K, Shortlist, abs_cosine, builtin_rerank,
                                               iterpert_select, shortlist_indices, top_uncertainty, uncertainty_ranks)
from harmonycell.tools.record import atomic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "real"
COMMAND = "nice -n 10 python bench/acquisition.py"
N_RANDOM = 10
LAMBDA_ITERPERT = 0.5
MIN_REAL_POOL = 8
METHODS = ("bald", "iterpert", "ours", "ours_nosets", "null")


@dataclass
class World:
    name: str
    family: str
    emb: np.ndarray  # (n, d) embedding of each perturbable gene
    effects: np.ndarray  # (n, G) measured effect of perturbing it
    genes: list[str]
    pathways: list[list[str]] | None  # gene sets of each perturbable gene (None: not defined)


# ---------------------------------------------------------------- worlds
def synthetic_world(seed: int, coexpression: float, n_genes: int = 400, n_pathways: int = 8,
                    pathway_size: int = 30, n_ctrl: int = 1500, cells_per_pert: int = 50) -> World:
    rng = np.random.default_rng(seed)
    members = rng.permutation(n_genes)[: n_pathways * pathway_size].reshape(n_pathways, pathway_size)
    # co-expression: each pathway is a latent programme varying from cell to cell
    L = np.zeros((n_pathways, n_genes))
    for p, m in enumerate(members):
        L[p, m] = rng.uniform(0.5, 1.0, pathway_size) * rng.choice([-1, 1], pathway_size)
    X = rng.normal(0, 1, (n_ctrl, n_pathways)) @ (coexpression * L) + rng.normal(0, 1, (n_ctrl, n_genes))
    emb = gene_embeddings(X, seed=seed)
    # effects: a pathway gene shifts its pathway's signature (its members and downstream targets)
    signature = np.zeros((n_pathways, n_genes))
    strength = rng.lognormal(0, 0.6, n_pathways)  # some pathways matter much more than others
    for p, m in enumerate(members):
        targets = rng.choice(n_genes, 20, replace=False)
        signature[p, m] = L[p, m]
        signature[p, targets] += rng.normal(0, 0.8, 20)
    effects = np.zeros((n_genes, n_genes))
    pathway_of: list[list[str]] = [[] for _ in range(n_genes)]
    for p, m in enumerate(members):
        for g in m:
            pathway_of[g].append(f"P{p}")
            effects[g] += strength[p] * rng.uniform(0.5, 1.5) * np.sign(L[p, g]) * signature[p]
    effects += rng.normal(0, 0.05, effects.shape)  # gene-specific effects no embedding predicts
    effects[np.arange(n_genes), np.arange(n_genes)] -= rng.uniform(1.0, 2.0, n_genes)  # knock-down
    effects += rng.normal(0, 1 / np.sqrt(cells_per_pert), effects.shape)  # pseudo-bulk noise
    family = "synthetic-clear" if coexpression >= 1 else "synthetic-faint"
    return World(f"{family}-seed{seed}", family, emb, effects, [f"G{i:03d}" for i in range(n_genes)], pathway_of)


def real_world(path: Path, name: str, keep: tuple[str, str] | None = None) -> tuple[World | None, dict]:
    """Single-gene perturbations of measured genes, after the product's own unification."""
    import tempfile

    import anndata as ad

    from harmonycell.tools.data.unify import unify
    from harmonycell.tools.schema import COMBO_SEP

    with tempfile.TemporaryDirectory() as tmp:
        src = path
        if keep is not None:  # one cell type of a multi-line file, written outside the repository
            a = ad.read_h5ad(path)
            a = a[(a.obs[keep[0]].astype(str) == keep[1]).to_numpy()].copy()
            src = Path(tmp) / f"{name}.h5ad"
            a.write_h5ad(src)
        adata = unify([src], task="unseen-perturbation", seed=0).adata
    eff = measured_effects(adata)
    singles = [c for c in adata.obs["condition_name"].astype(str).unique() if c != "control" and COMBO_SEP not in c]
    usable = [(ci, i) for ci, cs in enumerate(eff.conditions) for i, c in enumerate(cs) if COMBO_SEP not in c]
    counts = {"single_gene_perturbations": len(singles),
              "of_which_measured_genes": len({eff.conditions[ci][i] for ci, i in usable}),
              "combinations": len({c for c in adata.obs["condition_name"].astype(str) if COMBO_SEP in c}),
              "contexts": eff.contexts, "genes": adata.n_vars, "cells": adata.n_obs}
    if len(usable) < MIN_REAL_POOL:
        counts["skipped"] = (f"only {len(usable)} single perturbation(s) of a measured gene; a gene "
                             f"embedding exists only for measured genes and the pool needs {MIN_REAL_POOL}")
        return None, counts
    ctrl = adata.obs["is_control"].astype(bool).to_numpy()
    emb = gene_embeddings(adata.X[ctrl])
    rows = np.stack([emb[eff.genes[ci][i]].sum(0) for ci, i in usable])
    effects = np.stack([eff.deltas[ci][i] for ci, i in usable])
    genes = [eff.conditions[ci][i] + (f"|{eff.contexts[ci]}" if len(eff.contexts) > 1 else "") for ci, i in usable]
    return World(name, name, rows, effects, genes, None), counts


# ---------------------------------------------------------------- one simulated campaign
def test_mse(world: World, acquired: np.ndarray, test: np.ndarray) -> tuple[float, float | None]:
    fit = fit_ridge(world.emb[acquired], world.effects[acquired])
    err = ((fit.predict(world.emb[test]) - world.effects[test]) ** 2).mean(1)
    if world.pathways is None:
        return float(err.mean()), None
    on = np.array([bool(world.pathways[t]) for t in test])
    return float(err.mean()), float(err[on].mean()) if on.any() else None


def choose(method: str, world: World, acquired: np.ndarray, pool: np.ndarray, b: int,
           rng: np.random.Generator, members: int, seed: int) -> np.ndarray:
    if method in ("random", "null"):
        return rng.choice(pool, min(b, len(pool)), replace=False)
    ens = bootstrap_ensemble(world.emb[acquired], world.effects[acquired], members, seed)
    u = epistemic_uncertainty(ens, world.emb[pool])
    if method == "bald":
        return pool[top_uncertainty(u, b)]
    if method == "iterpert":
        sim = abs_cosine(world.emb[pool], world.emb[acquired]).max(1)
        return pool[iterpert_select(u, sim, b, LAMBDA_ITERPERT)]
    top = shortlist_indices(u, SHORTLIST_K)
    use_sets = world.pathways is not None and method == "ours"
    paths = [world.pathways[pool[i]] for i in top] if use_sets else None
    sl = Shortlist([world.genes[pool[i]] for i in top], u[top], uncertainty_ranks(u)[top],
                   world.emb[pool[top]], len(pool), paths)
    covered = {p for a in acquired for p in world.pathways[a]} if use_sets else set()
    cap = default_cap(b, len({p for s in paths for p in s})) if paths is not None else None
    picks = builtin_rerank(sl, [world.genes[a] for a in acquired], world.emb[acquired], b, covered, cap)
    return pool[top[[c.index for c in picks]]]


def campaign(world: World, method: str, test: np.ndarray, start: np.ndarray, b: int, rounds: int,
             rng: np.random.Generator, members: int, seed: int) -> dict[str, list]:
    acquired = start.copy()
    curve_all, curve_path = [], []
    for r in range(rounds + 1):
        a, p = test_mse(world, acquired, test)
        curve_all.append(a)
        curve_path.append(p)
        if r == rounds:
            break
        pool = np.setdiff1d(np.arange(len(world.genes)), np.concatenate([acquired, test]))
        if len(pool) == 0:
            break
        acquired = np.concatenate([acquired, choose(method, world, acquired, pool, b, rng, members, seed + r)])
    return {"all": curve_all, "pathway": curve_path}


def auc(curve: list[float | None]) -> float | None:
    if any(v is None for v in curve) or len(curve) < 2:
        return None
    return float(np.trapezoid(curve) / (len(curve) - 1))


def replicate(world: World, rep: int, test_frac: float, start_n: int, b: int, rounds: int,
              members: int) -> dict:
    rng = np.random.default_rng(1000 * rep + 7)
    n = len(world.genes)
    order = rng.permutation(n)
    n_test = max(1, int(round(test_frac * n)))
    test, rest = order[:n_test], order[n_test:]
    start = rest[:start_n]  # the same start for every method
    curves = {}
    for d in range(N_RANDOM):
        curves[f"random{d}"] = campaign(world, "random", test, start, b, rounds,
                                        np.random.default_rng([rep, d]), members, rep)
    for m in METHODS:
        curves[m] = campaign(world, m, test, start, b, rounds,
                             np.random.default_rng([rep, N_RANDOM]), members, rep)
    return {"world": world.name, "replicate": rep, "n_test": int(n_test), "start": int(start_n),
            "test": test.tolist(), "curves": curves}


# ---------------------------------------------------------------- statistics
def bootstrap_ci(x: np.ndarray, n_boot: int = 10000, seed: int = 0) -> tuple[float, float]:
    from harmonycell.tools.evaluation.compare import bootstrap_mean_ci

    return bootstrap_mean_ci(np.asarray(x, float), seed=seed, n_boot=n_boot)


def summarise(reps: list[dict], metric: str) -> dict | None:
    aucs = {k: [] for k in reps[0]["curves"]}
    for r in reps:
        for k, c in r["curves"].items():
            aucs[k].append(auc(c[metric]))
    if any(v is None for vs in aucs.values() for v in vs):
        return None
    A = {k: np.array(v) for k, v in aucs.items()}
    ref = np.mean([A[f"random{d}"] for d in range(N_RANDOM)], axis=0)
    rows = {"random (mean of 10 draws)": {"auc_mean": float(ref.mean())}}
    for m in METHODS:
        diff = A[m] - ref
        lo, hi = bootstrap_ci(diff)
        verdict = "better than random" if hi < 0 else "worse than random" if lo > 0 else "indistinguishable from random"
        rows[m] = {"auc_mean": float(A[m].mean()), "diff_vs_random": float(diff.mean()),
                   "ci95": [lo, hi], "relative_diff": float(diff.mean() / ref.mean()),
                   "n_replicates": len(diff), "conclusion": verdict}
    rows["null"]["covers_zero"] = rows["null"]["ci95"][0] <= 0 <= rows["null"]["ci95"][1]
    # how well the intervals are calibrated here: each of the 11 random draws in turn treated as
    # the null method against the mean of the other 10; about 95% of these intervals should cover 0
    draws = [A[f"random{d}"] for d in range(N_RANDOM)] + [A["null"]]
    covered = 0
    for k, draw in enumerate(draws):
        rest = np.mean([d for j, d in enumerate(draws) if j != k], axis=0)
        lo, hi = bootstrap_ci(draw - rest, seed=k + 1)
        covered += lo <= 0 <= hi
    rows["interval_calibration"] = {"random_draws_tried_as_null": len(draws), "intervals_covering_0": covered}
    beats = [m for m in ("bald", "iterpert", "ours", "ours_nosets") if rows[m]["conclusion"] == "better than random"]
    rows["statement"] = ("nothing beats random here" if not beats else
                         f"{', '.join(beats)} beat random (95% interval of the AUC difference below 0)")
    return rows


def mean_curves(reps: list[dict], metric: str) -> dict[str, list[float]]:
    out = {}
    keys = ["random"] + list(METHODS)
    for k in keys:
        names = [f"random{d}" for d in range(N_RANDOM)] if k == "random" else [k]
        curves = [r["curves"][n][metric] for r in reps for n in names]
        if any(v is None for c in curves for v in c):
            continue
        out[k] = np.mean(np.array(curves, dtype=float), axis=0).tolist()
    return out


def plot(families: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f, m) for f, info in families.items() for m in ("all", "pathway") if info["curves"].get(m)]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    styles = {"random": ("grey", "-"), "bald": ("tab:red", "--"), "iterpert": ("tab:orange", "-."),
              "ours": ("tab:blue", "-"), "ours_nosets": ("tab:cyan", "--"), "null": ("lightgrey", ":")}
    for ax, (fam, metric) in zip(axes.flat, panels):
        info = families[fam]
        x = info["start"] + info["b"] * np.arange(info["rounds"] + 1)
        for k, ys in info["curves"][metric].items():
            c, ls = styles[k]
            ax.plot(x[: len(ys)], ys, color=c, linestyle=ls, label=k if k != "random" else "random (mean of 10)")
        ax.set_title(f"{fam}\n({'all test perturbations' if metric == 'all' else 'pathway-gene perturbations'})",
                     fontsize=9)
        ax.set_xlabel("perturbations acquired")
        ax.set_ylabel("test MSE (mean over replicates)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    atomic.write_with(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 worlds, fewer rounds and splits (a smoke run)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--no-real", action="store_true", help="synthetic worlds only")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    q = args.quick
    # one split per synthetic world: replicates are then independent worlds, which the bootstrap
    # over replicates assumes (splits of one world would share its quirks)
    cfg = {"world_seeds": 4 if q else 40, "splits_per_world": 1, "b": 8, "rounds": 4 if q else 10,
           "start": 4, "test_frac": 0.2, "members": MEMBERS, "embedding_pcs": EMBED_PCS,
           "shortlist_k": SHORTLIST_K, "lambda_iterpert": LAMBDA_ITERPERT, "random_draws": N_RANDOM,
           "real": {"test_frac": 0.34, "start": 2, "b": 1, "splits": 6 if q else 30}}
    families: dict[str, dict] = {}
    skipped: dict[str, dict] = {}

    def run_family(name: str, worlds: list[World], splits: int, test_frac: float, start: int, b: int, rounds: int):
        # every replicate its own id, so that its test split and its random draws are its own
        pairs = [(w, s) for w in worlds for s in range(splits)]
        reps = [replicate(w, i, test_frac, start, b, rounds, cfg["members"]) for i, (w, _) in enumerate(pairs)]
        families[name] = {
            "worlds": [w.name for w in worlds], "replicates": len(reps), "start": start, "b": b, "rounds": rounds,
            "pool_size": len(worlds[0].genes), "n_test": reps[0]["n_test"],
            "has_pathways": worlds[0].pathways is not None,
            "summary": {m: summarise(reps, m) for m in ("all", "pathway")},
            "curves": {m: mean_curves(reps, m) for m in ("all", "pathway")},
        }
        print(f"{name}: {len(reps)} replicates done at {time.perf_counter() - t0:.0f}s", flush=True)

    for offset, coex in ((0, 1.5), (1000, 0.35)):  # the two families share no world seed
        worlds = [synthetic_world(offset + s, coex) for s in range(cfg["world_seeds"])]
        run_family(worlds[0].family, worlds, cfg["splits_per_world"], cfg["test_frac"], cfg["start"], cfg["b"],
                   cfg["rounds"])
    if not args.no_real:
        real = [("papalexi", args.data / "papalexi_eccite_lowmoi.h5ad", None),
                ("norman-k562", args.data / "norman_mcfaline_perturbench_devel.h5ad", ("cell_type", "k562"))]
        for name, path, keep in real:
            if not path.exists():
                skipped[name] = {"skipped": f"{path} not found"}
                continue
            world, counts = real_world(path, name, keep)
            if world is None:
                skipped[name] = counts
                print(f"{name}: skipped ({counts['skipped']})", flush=True)
                continue
            rc = cfg["real"]
            n_test = max(1, int(round(rc["test_frac"] * len(world.genes))))
            rounds = len(world.genes) - n_test - rc["start"]  # until the pool is empty
            run_family(name, [world], rc["splits"], rc["test_frac"], rc["start"], rc["b"], rounds)
            families[name]["counts"] = counts
    out = {"command": COMMAND + (" --quick" if q else ""), "config": cfg, "families": families,
           "skipped": skipped, "seconds": round(time.perf_counter() - t0, 1),
           "note": "AUC = mean test MSE over the learning curve (lower is better); diff_vs_random < 0 "
                   "means fewer errors than random; intervals are 95% bootstrap over replicates "
                   "(synthetic: one independent world each; real data: random test splits of the one "
                   "dataset). In synthetic worlds `ours` is given the true pathways as gene sets, which "
                   "no other method sees; `ours_nosets` is the same re-rank without them."}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "acquisition_quick" if q else "acquisition"
    atomic.write_json(args.out / f"{stem}.json", out)
    plot(families, args.out / f"{stem}.png")
    for fam, info in families.items():
        for metric, rows in info["summary"].items():
            if rows is None:
                continue
            print(f"\n{fam} [{metric}] random AUC {rows['random (mean of 10 draws)']['auc_mean']:.4f}; {rows['statement']}")
            cal = rows["interval_calibration"]
            print(f"  (interval check: {cal['intervals_covering_0']} of {cal['random_draws_tried_as_null']} "
                  "random draws, each treated as the null, have an interval covering 0)")
            for m in METHODS:
                r = rows[m]
                print(f"  {m:9s} diff {r['diff_vs_random']:+.4f}  95% CI [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]"
                      f"  ({r['relative_diff']:+.1%})  {r['conclusion']}")
    for name, c in skipped.items():
        print(f"\n{name}: skipped -- {c.get('skipped')}")
    print(f"\nwrote {args.out / (stem + '.json')} and .png in {out['seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
