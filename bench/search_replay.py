"""Replay search policies against the exhaustive tables of bench/search.py (no training here).

Every policy sees the same table: a node's reward is looked up, with the product's formula
(``tree.reward``: 0.8 x validation metric in [0, 1] + 0.2 x f_time(CPU s / CPU s of the run's
first node)). Each policy picks, after its expansions, the node with the best validation metric
(as ``Tree.best`` does in a run); its TEST score is read from the same table.
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Callable

import numpy as np

from harmonycell.tools.evaluation.compare import bootstrap_mean_ci
from harmonycell.tools.record import atomic
from harmonycell.tools.search import tree as T

ROOT = Path.cwd()
RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache"
EXPANSIONS = 16
POLICIES = ("hierarchical MCTS", "flat MCTS", "random", "greedy")
WARM_PAIRS = (("kang", "kang_muscat"), ("kang_muscat", "kang"))  # same biology, other schema
TARGET_FRACTION = 0.95


# ----------------------------------------------------------------------------- the table as a menu

class Table:
    def __init__(self, data: dict):
        from harmonycell.tools.evaluation.metrics import SEARCH_METRIC

        self.data, self.metric = data, SEARCH_METRIC
        self.nodes = data["nodes"]
        ok = {a: r for a, r in self.nodes.items() if r["status"] == "ok" and (r.get("val") or {}).get(SEARCH_METRIC) is not None}
        self.val = {a: r["val"][SEARCH_METRIC] for a, r in ok.items()}
        self.test = {a: (r.get("test") or {}).get(SEARCH_METRIC) for a, r in ok.items()}
        self.cpu = {a: r.get("cpu_s") or r.get("wall_s") for a, r in ok.items()}
        self.paths = list(self.nodes)
        self.optimum = max(self.val.values())
        self.best_path = max(self.val, key=self.val.get)

    def menu(self, action: str) -> list[str]:
        """The hierarchical menu restricted to the table: root -> paradigms -> backbones -> refinements."""
        prefix = action.split("/") if action else []
        d = len(prefix)
        return sorted({"/".join(p.split("/")[: d + 1]) for p in self.paths
                       if p.split("/")[:d] == prefix and len(p.split("/")) > d})

    def reward(self, action: str, t_root: float | None) -> float:
        if action not in self.val:
            return 0.0
        return T.reward(T.normalised_metric(self.val[action]), self.cpu[action], t_root)


# ----------------------------------------------------------------------------- policies

def run_tree_policy(table: Table, seed: int, menu: Callable[[str], list[str]], priors=None) -> list[str]:
    """The Planner's policy (tree.choose_expansion) on a menu; returns the trained paths in order."""
    tree = T.Tree(seed=seed, priors=priors or {})
    order: list[str] = []
    for _ in range(EXPANSIONS):
        c = T.choose_expansion(tree, menu, tree.priors)
        if c is None:
            break
        parent = c.parent
        for a in c.actions[:-1]:
            parent = tree.add(parent, a, status="decision").id
        node = tree.add(parent, c.actions[-1])
        action = node.action
        order.append(action)
        if action not in table.val:  # failed in the table: counts against this node only
            node.status = "failed"
            node.visits += 1
            continue
        if tree.t_root is None:
            tree.t_root = table.cpu[action]
        r = table.reward(action, tree.t_root)
        node.status, node.reward, node.val_metric = "ok", r, table.val[action]
        T.backpropagate(tree, node.id, r)
    return order


def hierarchical(table: Table, seed: int, priors=None) -> list[str]:
    return run_tree_policy(table, seed, table.menu, priors)


def flat(table: Table, seed: int) -> list[str]:
    paths = table.paths
    return run_tree_policy(table, seed, lambda a: paths if not a else [])


def random_search(table: Table, seed: int) -> list[str]:
    rng = random.Random(f"random:{seed}")
    return [rng.choice(table.paths) for _ in range(EXPANSIONS)]  # with replacement, as random search does


def greedy(table: Table, seed: int) -> list[str]:
    """Hill climbing: a random backbone first; then an untried refinement of the best node so far,
    or, when it has none left, an untried backbone."""
    rng = random.Random(f"greedy:{seed}")
    backbones = [p for p in table.paths if p.count("/") == 1]
    order: list[str] = []
    while len(order) < EXPANSIONS:
        tried = set(order)
        done_ok = [a for a in order if a in table.val]
        best = max(done_ok, key=lambda a: table.val[a]) if done_ok else None
        base = "/".join(best.split("/")[:2]) if best else None
        kids = [p for p in table.paths if base and p.startswith(base + "/") and p not in tried]
        rest = [b for b in backbones if b not in tried]
        pool = kids or rest or [p for p in table.paths if p not in tried]
        if not pool:
            break
        order.append(rng.choice(sorted(pool)))
    return order


# ----------------------------------------------------------------------------- measurement

def curve(table: Table, order: list[str]) -> list[float]:
    best, out = -np.inf, []
    for a in order:
        if a in table.val:
            best = max(best, table.val[a])
        out.append(max(0.0, best) / table.optimum if np.isfinite(best) and table.optimum > 0 else 0.0)
    return out + [out[-1]] * (EXPANSIONS - len(out)) if out else [0.0] * EXPANSIONS


def pick(table: Table, order: list[str]) -> str | None:
    ok = [a for a in order if a in table.val]
    return max(ok, key=lambda a: table.val[a]) if ok else None


def expansions_to(table: Table, order: list[str], fraction: float = TARGET_FRACTION) -> int | None:
    for i, c in enumerate(curve(table, order)[: len(order)], 1):
        if c >= fraction:
            return i
    return None


def bootstrap_ci(x: list[float], seed: int = 0, n: int = 2000) -> tuple[float, float]:
    return bootstrap_mean_ci(np.asarray(x, float), seed=seed, n_boot=n)


def paired_vs_hierarchical(out: dict, runners: dict, key: str) -> dict:
    """Hierarchical MCTS minus each other policy on ``key`` (per seed), with a bootstrap interval."""
    h = np.asarray(out["policies"]["hierarchical MCTS"][key])
    res = {}
    for name in runners:
        if name == "hierarchical MCTS":
            continue
        d = list(h - np.asarray(out["policies"][name][key]))
        lo, hi = bootstrap_ci(d)
        res[name] = {"mean": round(float(np.mean(d)), 4), "ci95": [round(lo, 4), round(hi, 4)], "n": len(d),
                     "conclusion": "better" if lo > 0 else "worse" if hi < 0 else "indistinguishable"}
    return res


def evaluate_task(table: Table, seeds: int) -> dict:
    runners = {"hierarchical MCTS": hierarchical, "flat MCTS": flat, "random": random_search, "greedy": greedy}
    out: dict = {"optimum_val": table.optimum, "optimum_path": table.best_path,
                 "test_of_val_optimum": table.test[table.best_path],
                 "best_test_in_table": max(v for v in table.test.values() if v is not None),
                 "n_nodes": len(table.paths), "n_ok": len(table.val), "policies": {}}
    per_seed: dict[str, list] = {}
    for name, fn in runners.items():
        curves, tests, final = [], [], []
        for s in range(seeds):
            order = fn(table, s)
            c = curve(table, order)
            curves.append(c)
            final.append(c[-1])
            p = pick(table, order)
            tests.append(table.test.get(p) if p else None)
        per_seed[name] = final
        mean_curve = np.mean(curves, 0)
        t = [v for v in tests if v is not None]
        out["policies"][name] = {
            "mean_fraction_after_each_expansion": [round(float(v), 4) for v in mean_curve],
            "final_fraction_mean": round(float(np.mean(final)), 4),
            "final_fraction_ci95": [round(v, 4) for v in bootstrap_ci(final)],
            "area_under_curve_mean": round(float(np.mean([np.mean(c) for c in curves])), 4),
            "reached_optimum_runs": int(sum(f >= 1 - 1e-12 for f in final)),
            "test_of_pick_mean": round(float(np.mean(t)), 4) if t else None,
            "test_of_pick_ci95": [round(v, 4) for v in bootstrap_ci(t)] if t else None,
        }
        out["policies"][name]["_aucs"] = [float(np.mean(c)) for c in curves]
        out["policies"][name]["_finals"] = final
    # paired comparisons: hierarchical minus each other policy (area under the curve; final fraction)
    out["hierarchical_minus_other_auc"] = paired_vs_hierarchical(out, runners, "_aucs")
    out["hierarchical_minus_other_final_fraction"] = paired_vs_hierarchical(out, runners, "_finals")
    for p in out["policies"].values():
        p.pop("_aucs")
        p.pop("_finals")
    return out


def warm_start(tables: dict[str, Table], seeds: int) -> list[dict]:
    import tempfile

    from harmonycell.tools.search.knowledge import (DataScope, KnowledgeBase, NodeRecord, RunRecord, action_priors,
                                                    embed)

    rows = []
    for src, dst in WARM_PAIRS:
        if src not in tables or dst not in tables:
            continue
        s, d = tables[src], tables[dst]
        with tempfile.TemporaryDirectory() as tmp:
            kb = KnowledgeBase(Path(tmp) / "kb.sqlite")
            others = [k for k in tables if k not in (src, dst)]
            # the KB holds the source task and the unrelated tasks: retrieval must pick the source
            for key in [src, *others]:
                t = tables[key]
                kb.add(RunRecord(run_id=f"bench-{key}", task_kind=t.data["kind"], profile=t.data["profile"],
                                 embedding=embed([t.data["profile"]])[0],
                                 nodes=[NodeRecord(a, t.reward(a, t.cpu[t.paths[0]] if t.paths[0] in t.cpu else None),
                                                   t.val.get(a), "ok" if a in t.val else "failed") for a in t.paths],
                                 selected_path=t.best_path, selected_reward=t.reward(t.best_path, t.cpu.get(t.paths[0])),
                                 scope=DataScope.of([key], [])))  # each task its own data
            retrieval = kb.retrieve(embed([d.data["profile"]])[0], DataScope.of([dst], []))
        priors = action_priors(retrieval.entries) if retrieval.mode == "warm start" else {}
        cold = [expansions_to(d, hierarchical(d, k)) for k in range(seeds)]
        warm = [expansions_to(d, hierarchical(d, k, priors)) for k in range(seeds)]
        rows.append({"source": src, "target": dst, "retrieval": retrieval.summary(),
                     "target_fraction": TARGET_FRACTION,
                     "expansions_to_target_cold": cold, "expansions_to_target_warm": warm,
                     "cold_mean": _mean(cold), "warm_mean": _mean(warm),
                     "source_best_path": s.best_path, "target_best_path": d.best_path})
    return rows


def _mean(xs):
    v = [x if x is not None else EXPANSIONS + 1 for x in xs]  # never reached: counted as 17
    return round(statistics.mean(v), 2)


def plot(name: str, res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = np.arange(1, EXPANSIONS + 1)
    for pol, r in res["policies"].items():
        ax.plot(x, r["mean_fraction_after_each_expansion"], marker="o", ms=3, label=pol)
    ax.set_xlabel("expansions (trained nodes)")
    ax.set_ylabel("best validation metric / exhaustive optimum")
    ax.set_title(f"{name}: mean over seeds ({res['n_nodes']} nodes in the table)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replay_all(seeds: int, quick: bool = False) -> dict:
    tables = {}
    for f in sorted(CACHE.glob("search_*.json")):
        data = json.loads(f.read_text())
        if data.get("finished") and len(data.get("nodes", {})) >= 25:
            tables[data["task"]] = Table(data)
    if quick:
        tables = dict(list(tables.items())[:1])
    results = {"seeds": seeds, "expansions": EXPANSIONS, "metric": next(iter(tables.values())).metric if tables else None,
               "tasks": {}, "warm_start": []}
    for key, t in tables.items():
        res = evaluate_task(t, seeds)
        res.update({k: t.data.get(k) for k in ("title", "kind", "cells", "genes", "train_cells", "val_queries",
                                                "test_queries", "epochs_cap", "machine", "finished")})
        res["baselines"] = t.data.get("baselines")
        results["tasks"][key] = res
        plot(key, res, RESULTS / f"search_{key}.png")
        print(f"[search-replay] {key}: optimum {t.optimum:.4f} ({t.best_path}); " + "; ".join(
            f"{p} final {r['final_fraction_mean']:.3f} test {r['test_of_pick_mean']}" for p, r in res["policies"].items()))
    rep = CACHE / "search_repeat.json"
    if rep.exists():
        r = json.loads(rep.read_text())
        cpu = [x["cpu_s"] for x in r["runs"] if x["cpu_s"]]
        wall = [x["wall_s"] for x in r["runs"]]
        r["cpu_s_spread"] = round((max(cpu) - min(cpu)) / statistics.mean(cpu), 4) if cpu else None
        r["wall_s_spread"] = round((max(wall) - min(wall)) / statistics.mean(wall), 4)
        r["note"] = "spread = (max - min) / mean over repeats of the same node on the shared machine"
        results["cost_repeat"] = r
    results["warm_start"] = warm_start(tables, seeds)
    for w in results["warm_start"]:
        print(f"[search-replay] warm start {w['source']} -> {w['target']}: {w['retrieval']['mode']} "
              f"(best similarity {w['retrieval']['best_similarity']}); expansions to 95%: cold {w['cold_mean']} warm {w['warm_mean']}")
    if not quick:
        atomic.write_json(RESULTS / "search.json", results)
    return results
