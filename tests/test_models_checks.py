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
