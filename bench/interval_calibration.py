"""How often a paired comparison says "better" when model and baseline do not differ.

    python bench/interval_calibration.py [--sims 2000]  -> bench/results/interval_calibration.json

Under the null, each per-query difference (model - baseline) is symmetric about 0 (the two
predictions are exchangeable). We draw n differences (n = 3, 5, 10, 25) from a normal and from
a heavy-tailed Student t(2), many times, and count the share of "better" conclusions of
(a) ``compare.compare_diffs``, the exact sign-flip test the Judge uses, and (b) the 95% percentile
bootstrap of the mean that it replaced (``better`` when the interval's low end is above 0). A
one-sided false "better" at a two-sided 5% test must stay at or below 2.5%.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "results" / "interval_calibration.json"
SIZES = (3, 5, 10, 25)
NOMINAL_BETTER = 0.025  # one side of a two-sided 5% test
OLD_N_BOOT = 2000


def null_draws(dist: str, n: int, sims: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(sims, n)) if dist == "normal" else rng.standard_t(2, size=(sims, n))


def old_bootstrap_better(diffs: np.ndarray, seed: int = 0) -> np.ndarray:
    """The replaced rule: 95% percentile bootstrap interval of the mean entirely above 0."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(diffs), dtype=bool)
    for i, d in enumerate(diffs):  # simulations
        means = d[rng.integers(0, len(d), size=(OLD_N_BOOT, len(d)))].mean(1)
        out[i] = np.quantile(means, 0.025) > 0
    return out


def sign_flip_better(diffs: np.ndarray) -> np.ndarray:
    from harmonycell.tools.evaluation.compare import compare_diffs

    return np.array([compare_diffs(d, "DeltaPCC", "null").conclusion == "better" for d in diffs])


def measure(sims: int, seed: int = 0, sizes=SIZES, old: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for dist in ("normal", "t2"):
        for n in sizes:
            d = null_draws(dist, n, sims, rng)
            new = float(sign_flip_better(d).mean())
            row = {"null": dist, "n": n, "sims": sims, "sign_flip_better_rate": new,
                   "monte_carlo_se": float(np.sqrt(NOMINAL_BETTER * (1 - NOMINAL_BETTER) / sims))}
            if old:
                row["old_percentile_bootstrap_better_rate"] = float(old_bootstrap_better(d).mean())
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = measure(args.sims)
    for r in rows:
        print(f"{r['null']:6s} n={r['n']:2d}: sign-flip {r['sign_flip_better_rate']:.4f}, "
              f"old bootstrap {r['old_percentile_bootstrap_better_rate']:.4f} "
              f"(nominal {NOMINAL_BETTER}, MC se {r['monte_carlo_se']:.4f})")
    payload = {"nominal_false_better": NOMINAL_BETTER, "rows": rows,
               "seconds": round(time.time() - t0, 1), "python": platform.python_version()}
    from harmonycell.tools.record import atomic

    atomic.write_text(args.out, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
