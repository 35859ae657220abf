"""Static checks on model code before anything reaches the sandbox.

No LLM takes part in these checks (a confident wrong agent must not be able to talk its way past
them). They are deliberately conservative: model code needs tensors and arithmetic, never files,
processes, the network or introspection, so anything that could reach those is rejected with the
line and the reason, which the LLM Coder sends back to the model to fix.

This is a lint, not the wall: Python offers more ways to reach a file than any list of names
can hold. The wall is the sandbox (docker or bwrap), which holds nothing the code must not read;
tests/test_seeded_cheats.py tries the ways this lint misses against it.
"""

from __future__ import annotations

import ast

from pydantic import BaseModel

from harmonycell.tools.errors import HarmonyCellError

ALLOWED_IMPORTS = frozenset({
    "torch", "math", "numpy", "typing", "dataclasses", "functools", "collections", "itertools",
    "__future__",
})
FORBIDDEN_NAMES = frozenset({
    "open", "exec", "eval", "compile", "__import__", "breakpoint", "globals", "locals",
    "vars", "getattr", "setattr", "delattr", "__builtins__", "memoryview", "help", "exit", "quit",
})
# Attributes through which torch/numpy reach files, processes, the network or native code.
FORBIDDEN_ATTRS = frozenset({
    "load", "save", "savez", "savez_compressed", "loadtxt", "savetxt", "genfromtxt", "fromfile",
    "tofile", "from_file", "memmap", "hub", "cpp_extension", "ctypeslib", "multiprocessing",
    "distributed", "ops", "classes", "_C", "system", "popen", "library", "load_library",
    # modules re-exported as attributes (torch.os, torch.sys.modules, np.lib._datasource.open)
    "os", "sys", "modules", "_datasource", "DataSource", "fromregex", "subprocess", "socket",
    "builtins", "io", "pathlib", "shutil", "importlib",
})
ALLOWED_DUNDERS = frozenset({"__init__", "__name__", "__future__"})


class CodeProblem(BaseModel):
    line: int | None
    reason: str

    def text(self) -> str:
        return f"line {self.line}: {self.reason}" if self.line else self.reason


class CodeCheckError(HarmonyCellError):
    """Model code failed the static checks; ``problems`` says where and why."""

    def __init__(self, problems: list[CodeProblem], where: str = "model code"):
        self.problems = problems
        super().__init__(
            "; ".join(p.text() for p in problems[:5]) + (" ..." if len(problems) > 5 else ""),
            where=where,
            fix="model code may import only " + ", ".join(sorted(ALLOWED_IMPORTS - {"__future__"}))
                + ", must define build_model(info) returning an nn.Module with forward(x_ctrl, pert),"
                " and must not touch files, processes or the network",
        )


def find_problems(code: str) -> list[CodeProblem]:
    """Every problem found, with its line (empty list: the code may be sent to the sandbox)."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return [CodeProblem(line=e.lineno, reason=f"syntax error: {e.msg}")]
    problems: list[CodeProblem] = []

    def bad(node: ast.AST, reason: str) -> None:
        problems.append(CodeProblem(line=getattr(node, "lineno", None), reason=reason))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] not in ALLOWED_IMPORTS:
                    bad(node, f"import of {alias.name!r} is not allowed")
                elif FORBIDDEN_ATTRS.intersection(parts):
                    bad(node, f"import of {alias.name!r} is not allowed (file/process access)")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level or mod.split(".")[0] not in ALLOWED_IMPORTS:
                bad(node, f"import from {'.' * node.level}{mod!r} is not allowed")
            elif FORBIDDEN_ATTRS.intersection(mod.split(".")):
                bad(node, f"import from {mod!r} is not allowed (file/process access)")
            for alias in node.names:
                if alias.name in FORBIDDEN_ATTRS or alias.name in FORBIDDEN_NAMES:
                    bad(node, f"importing {alias.name!r} from {mod!r} is not allowed (file/process access)")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            bad(node, f"use of {node.id!r} is not allowed")
        elif isinstance(node, ast.Attribute):
            if node.attr in FORBIDDEN_ATTRS:
                bad(node, f"attribute {node.attr!r} is not allowed (reaches files, processes or native code)")
            elif node.attr.startswith("__") and node.attr not in ALLOWED_DUNDERS:
                bad(node, f"dunder attribute {node.attr!r} is not allowed (introspection)")
    builders = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_model"]
    if not builders:
        bad(tree, "no top-level function build_model(info) is defined")
    elif not builders[0].args.args:
        bad(builders[0], "build_model must take one argument (info)")
    forwards = [f for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "forward"]
    if not forwards:
        bad(tree, "no class defines forward(self, x_ctrl, pert)")
    elif not any(len(f.args.args) >= 3 for f in forwards):
        bad(forwards[0], "forward must take (self, x_ctrl, pert)")
    return problems


def check_code(code: str) -> list[str]:
    """Every problem found as one line of text each (empty: the code may go to the sandbox)."""
    return [p.text() for p in find_problems(code)]


def ensure_safe(code: str, where: str = "model code") -> None:
    problems = find_problems(code)
    if problems:
        raise CodeCheckError(problems, where=where)
