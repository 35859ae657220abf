"""The package's import graph, read from the source with ast: no circle anywhere, and the run's core
(every module of ``agents`` outside ``agents.cli``) never imports the terminal.

Imports inside functions count as edges too: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agents", "tools", "sandbox", "prompts")  # the folders that are harmonycell.<name>
CLI = "harmonycell.agents.cli"
API_FOLDER = "api"  # agents/api: the Python API, installed as the package `harmonycell`


def modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT / top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if top == "agents" and parts[:1] == [API_FOLDER]:  # agents/api is `harmonycell` itself
                out[".".join(["harmonycell", *parts[1:]])] = path
                continue
            out[".".join(["harmonycell", top, *parts])] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(name: str, mods: dict[str, Path]) -> str | None:
    """The package module ``name`` is (or lies in): ``a.b.C`` -> ``a.b`` when C is a name in it."""
    while name not in mods and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in mods else None


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the import}."""
    mods = modules()
    g: dict[str, dict[str, int]] = {m: {} for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):  # module level and in functions
            if isinstance(node, ast.ImportFrom):
                base = _absolute(mod, path.name == "__init__.py", node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                owner = _owner(t, mods)
                if owner is not None and owner != mod:
                    g[mod].setdefault(owner, node.lineno)
    return g


def circles(g: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module."""
    names = sorted(g)
    index = {m: i for i, m in enumerate(names)}
    pairs = [(index[m], index[t]) for m in g for t in g[m]]
    rows, cols = zip(*pairs) if pairs else ((), ())
    adj = sp.coo_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(names), len(names)))
    _, label = connected_components(adj, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for m, lab in zip(names, label):
        groups.setdefault(int(lab), []).append(m)
    return [c for c in groups.values() if len(c) > 1]


def test_the_graph_sees_the_package():
    """Guards the walk itself: a graph with no edges would pass every check below."""
    g = import_graph()
    assert "harmonycell.agents.team" in g and "harmonycell.sandbox.executors" in g
    assert "harmonycell.agents.planner" in g["harmonycell.agents.team"]
    assert "harmonycell.agents.cli.drive" in g["harmonycell.agents.cli.main"]
    assert sum(map(len, g.values())) > 200
    # and the component finder finds a circle where there is one
    assert circles({"a": {"b": 1}, "b": {"a": 1}, "c": {"a": 1}}) == [["a", "b"]]


def test_no_import_circle():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("text, found", [
    ("from harmonycell.agents.cli.render import render_record", True),
    ("def f():\n    from .cli import progress", True),
    ("from harmonycell.agents.messages import NodePlan", False),
])
def test_core_rule_catches_a_cli_import(text, found):
    """The check below would catch a core module reaching the terminal, even from a function."""
    node = ast.parse(text)
    hits = [_absolute("harmonycell.agents.coder", False, n) for n in ast.walk(node) if isinstance(n, ast.ImportFrom)]
    assert any(h.startswith(CLI) for h in hits) is found


def test_core_never_imports_the_cli():
    g = import_graph()
    core = [m for m in g if m.startswith("harmonycell.agents") and not m.startswith(CLI)]
    bad = [f"{m} -> {t} (line {line})" for m in core for t, line in g[m].items() if t.startswith(CLI)]
    assert not bad, "the run's core imports the terminal: " + "; ".join(bad)


def api_modules(g) -> list[str]:
    folders = ("agents", "tools", "sandbox", "prompts")
    return [m for m in g if m == "harmonycell" or (m.startswith("harmonycell.") and m.split(".")[1] not in folders)]


def test_the_api_sits_between_the_core_and_the_cli():
    """tools <- sandbox <- agents core <- API (import harmonycell) <- CLI: the core never imports
    the API, the API never imports the terminal, and the CLI's predict goes through the API."""
    g = import_graph()
    api = api_modules(g)
    assert {"harmonycell", "harmonycell.prediction", "harmonycell.runview"} <= set(api)
    core = [m for m in g if m.startswith("harmonycell.agents") and not m.startswith(CLI)]
    bad = [f"{m} -> {t}" for m in core for t in g[m] if t in api]
    bad += [f"{m} -> {t}" for m in api for t in g[m] if t.startswith(CLI)]
    assert not bad, "wrong direction: " + "; ".join(bad)
    assert "harmonycell.prediction" in g["harmonycell.agents.cli.predict"]
