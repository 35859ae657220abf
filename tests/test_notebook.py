"""docs/tutorial.ipynb executed end to end by a real Jupyter kernel (nbclient + ipykernel), on the
real Papalexi slice it names, with its outputs checked."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "tutorial.ipynb"


def text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_tutorial_runs_end_to_end(real_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HC_TUTORIAL_RUNS", str(tmp_path / "runs"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "docs")}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not any(o.get("output_type") == "error" for o in c.get("outputs", [])) for c in code)
    everything = "\n".join(text_of(c) for c in code)
    assert "targeted genes" in everything and "raw counts" in everything  # the slice and its audit
    assert "valid: True" in everything
    assert "NOT BETTER THAN BASELINES" in everything or "BETTER THAN EVERY BASELINE" in everything
    assert "PREDICTED by a model, not measured" in everything
    assert "JAK1" in everything and "IRF9" in everything
    assert "'predict.refit', 'predict.member'" in everything and "'predict.member', 'predict']" in everything
    assert "replay --verify: OK" in everything
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the comparisons and the top changed genes
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "verdict.json").exists()]
    assert (run_dir / "predict").is_dir()
