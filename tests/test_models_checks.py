import pytest

from harmonycell.tools.search import codegen
from harmonycell.tools.search.actions import all_backbone_paths, parse_action
from harmonycell.tools.search.code_checks import CodeCheckError, check_code, ensure_safe, find_problems

GOOD = """
import torch
import torch.nn as nn


class M(nn.Module):
    def __init__(self, info):
        super().__init__()
        self.lin = nn.Linear(info["n_perts"], info["n_genes"])

    def forward(self, x_ctrl, pert):
        return x_ctrl + self.lin(pert["mask"])


def build_model(info):
    return M(info)
"""


def test_every_template_passes_the_checks():
    for path in all_backbone_paths():
        code = codegen.render(parse_action(path))
        assert check_code(code) == [], path


def test_good_minimal_module_passes():
    ensure_safe(GOOD)


@pytest.mark.parametrize("snippet,needle", [
    ("import os\n", "'os'"),
    ("import socket\n", "'socket'"),
    ("from subprocess import run\n", "'subprocess'"),
    ("import torch.hub\n", "torch.hub"),
    ("X = open('/etc/passwd').read()\n", "'open'"),
    ("X = __import__('os')\n", "'__import__'"),
    ("import numpy as np\nX = np.load('x.npy')\n", "'load'"),
    ("import torch\nW = torch.load('w.pt')\n", "'load'"),
    ("Y = ().__class__.__bases__\n", "'__class__'"),
    ("Z = eval('1')\n", "'eval'"),
    ("import pathlib\n", "'pathlib'"),
])
def test_forbidden_constructs_are_rejected_with_line_and_reason(snippet, needle):
    problems = find_problems(GOOD + snippet)
    assert problems, snippet
    assert any(needle in p.reason for p in problems)
    assert all(p.line is None or p.line > 0 for p in problems)
    with pytest.raises(CodeCheckError):
        ensure_safe(GOOD + snippet)


def test_syntax_error_reports_line():
    problems = find_problems(GOOD + "def broken(:\n    pass\n")
    assert len(problems) == 1 and "syntax error" in problems[0].reason and problems[0].line


def test_contract_must_be_defined():
    reasons = " ".join(p.reason for p in find_problems("import torch\nx = 1\n"))
    assert "build_model" in reasons and "forward" in reasons


@pytest.mark.parametrize("line", [
    "x = np.lib._datasource.open('/data/unified.h5ad').read()",
    "x = np.fromregex('/data/unified.h5ad', 'x', [('a', 'S1')])",
    "m = torch.sys.modules['__main__']",
    "f = torch.os.open('/data/unified.h5ad', 0)",
])
def test_reach_through_re_exported_modules_is_flagged(line):
    import textwrap

    code = textwrap.dedent(f"""
        import torch
        import numpy as np

        class M(torch.nn.Module):
            def forward(self, x_ctrl, pert):
                {line}
                return x_ctrl

        def build_model(info):
            return M()
        """)
    assert check_code(code), line
