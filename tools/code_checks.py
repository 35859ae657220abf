"""Placeholder static checks until the model library lands (issue 6)."""

from __future__ import annotations

import ast

FORBIDDEN = {"open", "exec", "eval", "__import__", "compile"}
ALLOWED_IMPORTS = {"torch", "math", "numpy"}


def check_code(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return [f"syntax error line {exc.lineno}: {exc.msg}"]
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            bad = [n for n in names if n.split(".")[0] not in ALLOWED_IMPORTS]
            problems += [f"imports {n}" for n in bad]
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN:
            problems.append(f"uses {node.id}")
    return problems
