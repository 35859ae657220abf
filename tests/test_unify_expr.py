"""The restricted evaluator: what it computes, what it refuses, and fuzzing with hostile input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harmonycell.tools.errors import SpecError
from harmonycell.tools.data.expr import ExpressionError, evaluate


@pytest.fixture
def obs():
    return pd.DataFrame({
        "drug": ["DMSO", "taxol", "taxol", None],
        "treatment": ["vehicle (DMSO)", "0.2 uM taxol", "50 nM taxol", "x"],
        "sample": ["ctrl101", "stim107", "stim101", "ctrl107"],
        "n": [1, 2, 3, 4],
        "cat": pd.Categorical(["a", "b", "a", "b"]),
    })


@pytest.mark.parametrize("expr, expected", [
    ("obs['drug'] == 'DMSO'", [True, False, False, False]),
    ("obs['drug'].isin(['DMSO', 'taxol'])", [True, True, True, False]),
    ("(obs['n'] > 1) & (obs['n'] < 4)", [False, True, True, False]),
    ("obs['n'] >= 3 or obs['drug'] == 'DMSO'", [True, False, True, True]),
    ("~(obs['n'] > 2)", [True, True, False, False]),
    ("obs['n'] * 2 + 1", [3, 5, 7, 9]),
    ("obs['sample'].str.replace('^(ctrl|stim)', '', regex=True)", ["101", "107", "101", "107"]),
    ("obs['sample'].str.extract('(\\\\d+)')", ["101", "107", "101", "107"]),
    ("obs['sample'].str[:4]", ["ctrl", "stim", "stim", "ctrl"]),
    ("obs['cat'].astype('str').str.upper()", ["A", "B", "A", "B"]),
    ("'ctrl' if obs['drug'] == 'DMSO' else 'pert'", ["ctrl", "pert", "pert", "pert"]),
    ("obs['drug'].fillna('none')", ["DMSO", "taxol", "taxol", "none"]),
    ("obs['n'].between(2, 3)", [False, True, True, False]),
    ("obs['sample'].str.startswith('ctrl')", [True, False, False, True]),
    ("obs['cat'].astype('str') + '_' + obs['sample']", ["a_ctrl101", "b_stim107", "a_stim101", "b_ctrl107"]),
    ("'const'", ["const"] * 4),
    ("obs['n'].astype(str) + 'x'", ["1x", "2x", "3x", "4x"]),
])
def test_allowed_expressions(obs, expr, expected):
    assert evaluate(expr, obs).tolist() == expected


def test_dose_in_nm_from_text(obs):
    um = evaluate("obs['treatment'].str.extract('(\\\\d+(?:\\\\.\\\\d+)?)\\\\s*uM', flags=2).astype('float') * 1000", obs)
    nm = evaluate("obs['treatment'].str.extract('(\\\\d+(?:\\\\.\\\\d+)?)\\\\s*nM', flags=2).astype('float')", obs)
    assert um.iloc[1] == pytest.approx(200.0) and np.isnan(um.iloc[0])
    assert nm.iloc[2] == pytest.approx(50.0)


@pytest.mark.parametrize("expr, construct", [
    ("__import__('os').system('true')", "'__import__'"),
    ("obs.__class__", "'__class__'"),
    ("obs['drug'].__class__.__mro__", "'__mro__'"),
    ("obs['drug']._values", "'_values'"),
    ("open('/etc/passwd')", "'open'"),
    ("eval('1')", "'eval'"),
    ("exec('x=1')", "'exec'"),
    ("getattr(obs, 'drug')", "'getattr'"),
    ("obs['drug'].apply(print)", "'apply'"),
    ("obs['drug'].map(str)", "'map'"),
    ("obs.eval('n + 1')", "'eval'"),
    ("obs.query('n > 1')", "'query'"),
    ("obs['n'].pipe(len)", "'pipe'"),
    ("(lambda: 1)()", "lambda"),
    ("[x for x in obs['n']]", "list comprehension"),
    ("{x for x in obs['n']}", "set comprehension"),
    ("(x for x in obs['n'])", "generator expression"),
    ("{'a': 1}", "dict literal"),
    ("f'{obs}'", "f-string"),
    ("(y := 1)", "assignment expression"),
    ("'a' * 1000000000", "repeating a string"),
    ("2 ** 1000", "Pow"),
    ("obs['n'] @ obs['n']", "MatMult"),
    ("os", "'os'"),
    ("obs[obs['n'] > 1]", "non-string key"),
    ("obs['drug'].str.contains('(a+)+$')", "nested quantifier"),
    ("obs['drug'].astype(object.__subclasses__)", "attribute"),
    ("obs['drug'].astype('os.system')", "astype"),
    ("obs['n'].isin(*[1])", "starred"),
    ("obs['n'].clip(**{'lower': 1})", "keyword"),
    ("obs['n'].where(obs['n'] > 1, other=__builtins__)", "'__builtins__'"),
    ("import os", "syntax error"),
    ("x = 1", "syntax error"),
    ("obs['drug'].str", "is not a column"),
    ("obs", "whole obs table"),
    ("obs['n'] == obs", "whole obs table"),
    ("obs['n'].isin(obs)", "whole obs table"),
])
def test_hostile_expressions_rejected_naming_the_construct(obs, expr, construct):
    with pytest.raises(ExpressionError) as e:
        evaluate(expr, obs)
    assert isinstance(e.value, SpecError)
    assert construct in str(e.value)


def test_missing_column_named(obs):
    with pytest.raises(ExpressionError, match="column 'nope' does not exist"):
        evaluate("obs['nope'] == 1", obs)


def test_too_long_and_too_deep(obs):
    with pytest.raises(ExpressionError, match="too long"):
        evaluate("obs['n'] + " * 400 + "1", obs)
    with pytest.raises(ExpressionError, match="too (deep|large)"):
        evaluate("(" * 60 + "obs['n']" + ")+1" * 60, obs)


# --- fuzzing ---------------------------------------------------------------------------------
ATOMS = ["obs['n']", "obs['drug']", "obs['sample']", "'DMSO'", "1", "2.5", "True", "None", "[1, 2]",
         "__import__", "os", "open", "obs", "sys", "globals()", "obs.__dict__", "().__class__",
         "lambda: 0", "exit", "breakpoint()", "print", "type(obs)", "vars()", "dir()"]
OPS = [" + ", " - ", " * ", " / ", " == ", " != ", " & ", " | ", " < ", " and ", " or ", " ** ", " @ ", " if 1 else "]
SUFFIX = ["", ".str.lower()", ".isin(['a'])", ".astype('str')", ".__class__", ".mro()", "[0]", "()", ".str[1:]",
          ".fillna(0)", "._data", ".apply(eval)", ".str.replace('a', 'b')"]


@st.composite
def hostile(draw):
    parts = [draw(st.sampled_from(ATOMS)) + draw(st.sampled_from(SUFFIX))]
    for _ in range(draw(st.integers(0, 4))):
        parts.append(draw(st.sampled_from(OPS)))
        parts.append(draw(st.sampled_from(ATOMS)) + draw(st.sampled_from(SUFFIX)))
    return "".join(parts)


SAFE_TYPES = (pd.Series,)


@settings(max_examples=int(__import__("os").environ.get("HC_FUZZ_EXAMPLES", 400)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expr=hostile())
def test_fuzz_structured_hostile(obs, expr):
    """Whatever the combination, the evaluator returns a Series of per-cell values or raises
    ExpressionError: never another exception, never a non-data object (module, class, function)."""
    try:
        out = evaluate(expr, obs)
    except ExpressionError:
        return
    assert isinstance(out, pd.Series) and len(out) == len(obs)
    for v in out.tolist():
        assert v is None or isinstance(v, (str, int, float, bool, np.generic, list)) or pd.isna(v)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expr=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
def test_fuzz_random_text(obs, expr):
    try:
        out = evaluate(expr, obs)
    except ExpressionError:
        return
    assert isinstance(out, pd.Series) and len(out) == len(obs)
