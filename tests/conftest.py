from __future__ import annotations

from pathlib import Path

import os

import pytest

from harmonycell.tools.genes.db import ENV_PATH, default_path

# The installed gene database, pinned before the per-test data folder below would hide it.
os.environ.setdefault(ENV_PATH, str(default_path()))

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = (REPO / ".." / "shared" / "data" / "real").resolve()


@pytest.fixture(scope="session")
def real_data() -> Path:
    assert REAL_DATA.is_dir(), f"real datasets expected at {REAL_DATA} (../shared/data/real)"
    return REAL_DATA


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """The demo's two-schema synthetic data, generated once per test session."""
    from harmonycell.tools.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out)
    return out


@pytest.fixture(autouse=True)
def _private_knowledge_base(tmp_path_factory, monkeypatch):
    """Runs under test read and write a knowledge base of their own, never the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
