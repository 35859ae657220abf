"""The paired comparison's false-"better" rate under the null is at most nominal (issue 26), and
the percentile bootstrap it replaced is not (the contrast bench/interval_calibration.py records)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import interval_calibration as ic  # noqa: E402


def test_false_better_rate_is_at_most_nominal_on_a_small_simulation():
    sims = 400
    slack = 3 * np.sqrt(ic.NOMINAL_BETTER * (1 - ic.NOMINAL_BETTER) / sims)  # Monte Carlo
    rows = ic.measure(sims, seed=11, sizes=(3, 5, 10), old=True)
    for r in rows:
        assert r["sign_flip_better_rate"] <= ic.NOMINAL_BETTER + slack, r
        if r["n"] <= 5:  # a conclusion there is impossible by construction
            assert r["sign_flip_better_rate"] == 0.0
    # the old interval was anti-conservative at small n: the bench would notice a regression
    small = [r for r in rows if r["n"] == 3]
    assert all(r["old_percentile_bootstrap_better_rate"] > ic.NOMINAL_BETTER + slack for r in small)


def test_committed_bench_result_covers_every_size_and_holds():
    data = json.loads((REPO / "bench" / "results" / "interval_calibration.json").read_text())
    rows = data["rows"]
    assert {r["n"] for r in rows} == set(ic.SIZES)
    for r in rows:
        assert r["sign_flip_better_rate"] <= data["nominal_false_better"] + 3 * r["monte_carlo_se"], r
