"""A finished run to predict with (the demo's two-schema synthetic data, a three-node search)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "harmonycell.agents.cli"]


def cli(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=900, **kw)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def predict_run(synthetic_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict-runs")
    res = cli("run", synthetic_dir / "labA_counts.h5ad", synthetic_dir / "labB_lognorm.h5ad",
              "--out", out, "--budget", "3", "--epochs", "4", "--no-kb")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir
