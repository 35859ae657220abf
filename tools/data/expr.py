"""Restricted evaluator for the ``logic`` fields of a mapping specification.

Expressions come from an LLM and are untrusted. They are parsed with ``ast`` and *interpreted*
node by node here; nothing is ever handed to ``eval``/``exec``/``compile``. Only a whitelist is
understood: ``obs['column']`` access, constants, lists/tuples of constants, comparisons, boolean
and arithmetic operators, conditional expressions, and a fixed set of Series methods
(``isin``, ``astype``, ``fillna``, ...) and ``.str`` methods. Every other construct (names other
than ``obs``, imports, builtins, dunder or any other attribute, lambdas, comprehensions,
f-strings, starred arguments, ...) raises :class:`ExpressionError` naming it.
"""

from __future__ import annotations

import ast
import operator
import re

import numpy as np
import pandas as pd

from harmonycell.tools.errors import SpecError

MAX_EXPR_CHARS = 2000
MAX_NODES = 400
MAX_DEPTH = 40
MAX_PATTERN_CHARS = 200
MAX_CONST_CHARS = 1000

SERIES_METHODS = {
    "isin", "astype", "fillna", "isna", "notna", "isnull", "notnull", "where", "mask",
    "abs", "round", "clip", "between", "eq", "ne", "lt", "le", "gt", "ge",
}
STR_METHODS = {
    "lower", "upper", "strip", "lstrip", "rstrip", "title", "casefold", "len",
    "contains", "startswith", "endswith", "match", "fullmatch", "replace", "extract",
    "split", "get", "slice", "cat", "zfill", "removeprefix", "removesuffix", "isdigit",
    "isnumeric", "isalpha", "isalnum", "pad", "count", "find",
}
REGEX_METHODS = {"contains", "match", "fullmatch", "replace", "extract", "count", "split"}
ASTYPE_TARGETS = {"str": str, "float": float, "int": int, "bool": bool, "category": "category",
                  "string": "string", "object": object, "float32": "float32", "float64": "float64",
                  "int64": "int64"}
ALLOWED_KWARGS = {"regex", "case", "na", "n", "expand", "pat", "repl", "flags", "other", "lower",
                  "upper", "inclusive", "i", "start", "stop", "step", "sep", "width", "fillchar",
                  "side", "decimals", "value", "prefix", "suffix"}

BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}
CMPOPS = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}


class ExpressionError(SpecError):
    """A logic expression uses a construct outside the whitelist or fails on the data."""


def reject(construct: str, expression: str, why: str = "is not allowed") -> ExpressionError:
    return ExpressionError(
        f"{construct} {why} in a mapping expression",
        where=f"expression {expression[:120]!r}",
        fix="use only obs['column'], constants, comparisons, & | ~, arithmetic, isin, astype and .str methods",
    )


def node_name(node: ast.AST) -> str:
    return type(node).__name__


class _Str:
    """The ``.str`` accessor of an evaluated Series (a marker, never exposed)."""

    def __init__(self, series: pd.Series):
        self.series = series


class _Obs:
    """The obs table: only ``obs['column']`` may be taken from it."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame


class _Method:
    def __init__(self, target, name: str):
        self.target, self.name = target, name


class ExprEvaluator:
    def __init__(self, expression: str, obs: pd.DataFrame):
        self.expression, self.obs = expression, obs

    def fail(self, construct: str, why: str = "is not allowed") -> ExpressionError:
        return reject(construct, self.expression, why)

    def run(self):
        src = self.expression
        if not isinstance(src, str) or not src.strip():
            raise self.fail("an empty expression", "is not a value")
        if len(src) > MAX_EXPR_CHARS:
            raise self.fail(f"an expression of {len(src)} characters", f"is too long (max {MAX_EXPR_CHARS})")
        try:
            tree = ast.parse(src.strip(), mode="eval")
        except SyntaxError as e:
            raise self.fail("a syntax error", f"({e.msg})") from None
        n = sum(1 for _ in ast.walk(tree))
        if n > MAX_NODES:
            raise self.fail(f"an expression of {n} syntax nodes", f"is too large (max {MAX_NODES})")
        try:
            out = self.visit(tree.body, 0)
        except ExpressionError:
            raise
        except RecursionError:
            raise self.fail("nesting this deep", "is too deep") from None
        except Exception as e:  # pandas/numpy refusing an operation on these values
            raise ExpressionError(
                f"cannot be evaluated on the data: {type(e).__name__}: {str(e)[:200]}",
                where=f"expression {self.expression[:120]!r}",
                fix="compare columns with constants or with other columns of the same kind",
            ) from None
        if isinstance(out, _Obs):
            raise self.fail("the whole obs table as a value", "is not allowed; write obs['column']")
        return out

    def visit(self, node: ast.AST, depth: int):
        if depth > MAX_DEPTH:
            raise self.fail("nesting deeper than %d" % MAX_DEPTH, "is too deep")
        method = getattr(self, f"visit_{node_name(node)}", None)
        if method is None:
            raise self.fail(describe(node))
        return method(node, depth + 1)

    # --- leaves -----------------------------------------------------------------------------
    def visit_Constant(self, node: ast.Constant, depth: int):
        v = node.value
        if v is None or isinstance(v, (bool, int, float)):
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 10**15:
                raise self.fail(f"the integer constant {str(v)[:20]}...", "is too large")
            return v
        if isinstance(v, str):
            if len(v) > MAX_CONST_CHARS:
                raise self.fail(f"a string constant of {len(v)} characters", "is too long")
            return v
        raise self.fail(f"a {type(v).__name__} constant")

    def visit_List(self, node: ast.List, depth: int):
        vals = [self.value(e, depth) for e in node.elts]
        for v in vals:
            if not (v is None or isinstance(v, (str, int, float, bool))):
                raise self.fail("a list element that is not a constant")
        return vals

    visit_Tuple = visit_List

    def visit_Name(self, node: ast.Name, depth: int):
        if node.id == "obs":
            return _Obs(self.obs)
        if node.id in ("True", "False", "None"):  # pragma: no cover - py<3.8 style
            return {"True": True, "False": False, "None": None}[node.id]
        raise self.fail(f"the name {node.id!r}", "is not allowed (only obs is defined)")

    def visit_Subscript(self, node: ast.Subscript, depth: int):
        target = self.visit(node.value, depth)
        key = node.slice
        if isinstance(target, _Obs):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise self.fail("obs[...] with a non-string key", "is not allowed; write obs['column']")
            if key.value not in self.obs.columns:
                raise ExpressionError(
                    f"column {key.value!r} does not exist",
                    where=f"expression {self.expression[:120]!r}",
                    fix=f"use one of: {', '.join(map(str, self.obs.columns))}",
                )
            return self.obs[key.value]
        if isinstance(target, _Str):  # .str[0], .str[1:3]
            if isinstance(key, ast.Constant) and isinstance(key.value, int):
                return target.series.str[key.value]
            if isinstance(key, ast.Slice):
                parts = [None if p is None else self.visit(p, depth) for p in (key.lower, key.upper, key.step)]
                if not all(p is None or isinstance(p, int) for p in parts):
                    raise self.fail("a slice with non-integer bounds")
                return target.series.str[slice(*parts)]
            raise self.fail(".str[...] with a non-integer index")
        raise self.fail(f"subscripting a {type(target).__name__}")

    # --- attribute access and calls ---------------------------------------------------------
    def visit_Attribute(self, node: ast.Attribute, depth: int):
        attr = node.attr
        if attr.startswith("_"):
            raise self.fail(f"the attribute {attr!r} (private/dunder)")
        target = self.visit(node.value, depth)
        if isinstance(target, pd.Series):
            if attr == "str":
                return _Str(target.astype(str).where(target.notna(), None) if target.dtype != object else target)
            if attr in SERIES_METHODS:
                return _Method(target, attr)
        if isinstance(target, _Str) and attr in STR_METHODS:
            return _Method(target, attr)
        raise self.fail(f"the attribute {attr!r}")

    def visit_Call(self, node: ast.Call, depth: int):
        if not isinstance(node.func, ast.Attribute):
            raise self.fail(f"calling {describe(node.func)}", "is not allowed (only whitelisted methods)")
        m = self.visit(node.func, depth)
        if not isinstance(m, _Method):
            raise self.fail(f"calling {describe(node.func)}")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.fail("a starred argument")
        if m.name == "astype" and len(node.args) == 1 and isinstance(node.args[0], ast.Name) \
                and node.args[0].id in ("str", "float", "int", "bool"):
            # astype(str) is how people write it; the builtin is never looked up, only its name
            args = [node.args[0].id]
        else:
            args = [self.value(a, depth) for a in node.args]
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise self.fail("a **keyword argument")
            if kw.arg not in ALLOWED_KWARGS:
                raise self.fail(f"the keyword argument {kw.arg!r}")
            kwargs[kw.arg] = self.value(kw.value, depth)
        for v in list(args) + list(kwargs.values()):
            if not (v is None or isinstance(v, (str, int, float, bool, list, pd.Series))):
                raise self.fail(f"an argument of type {type(v).__name__}")
        if m.name in REGEX_METHODS:
            for v in list(args[:1]) + [kwargs.get("pat")]:
                if isinstance(v, str):
                    check_pattern(v, self)
        try:
            if isinstance(m.target, _Str):
                if m.name == "extract":
                    kwargs["expand"] = False  # always a Series, one group
                    if isinstance(args[0] if args else kwargs.get("pat"), str):
                        pat = args[0] if args else kwargs["pat"]
                        if re.compile(pat).groups != 1:
                            raise self.fail("str.extract with a pattern that has no or several groups",
                                            "is not supported (use exactly one (group))")
                if m.name == "split":
                    kwargs["expand"] = False
                if m.name == "cat":
                    if not args or not isinstance(args[0], pd.Series):
                        raise self.fail("str.cat without a Series to join")
                    args[0] = args[0].astype(str)
                return getattr(m.target.series.str, m.name)(*args, **kwargs)
            if m.name == "astype":
                if len(args) != 1 or args[0] not in ASTYPE_TARGETS:
                    raise self.fail(f"astype({args[0] if args else ''!r})",
                                    f"is not allowed (use one of {', '.join(ASTYPE_TARGETS)})")
                return m.target.astype(ASTYPE_TARGETS[args[0]])
            return getattr(m.target, m.name)(*args, **kwargs)
        except ExpressionError:
            raise
        except Exception as e:  # pandas raises many types for bad arguments
            raise ExpressionError(
                f"{m.name}(...) failed on the data: {type(e).__name__}: {str(e)[:200]}",
                where=f"expression {self.expression[:120]!r}",
                fix="check the column's values and the method's arguments",
            ) from None

    # --- operators ----------------------------------------------------------------------------
    def value(self, node: ast.AST, depth: int):
        """Visit a node used as an operand: the obs table and accessors are not values."""
        v = self.visit(node, depth)
        if isinstance(v, _Obs):
            raise self.fail("the whole obs table as a value", "is not allowed; write obs['column']")
        if isinstance(v, (_Str, _Method)):
            raise self.fail("an accessor or uncalled method as a value")
        return v

    def visit_Compare(self, node: ast.Compare, depth: int):
        left = self.value(node.left, depth)
        result = None
        for op, comp in zip(node.ops, node.comparators):
            right = self.value(comp, depth)
            if type(op) in CMPOPS:
                part = CMPOPS[type(op)](left, right)
            elif isinstance(op, (ast.In, ast.NotIn)) and isinstance(left, pd.Series) and isinstance(right, list):
                part = left.isin(right)
                if isinstance(op, ast.NotIn):
                    part = ~part
            else:
                raise self.fail(f"the comparison {node_name(op)}")
            result = part if result is None else (result & part)
            left = right
        return result

    def visit_BoolOp(self, node: ast.BoolOp, depth: int):
        vals = [self.value(v, depth) for v in node.values]
        out = as_bool(vals[0])
        for v in vals[1:]:
            out = (out & as_bool(v)) if isinstance(node.op, ast.And) else (out | as_bool(v))
        return out

    def visit_UnaryOp(self, node: ast.UnaryOp, depth: int):
        v = self.value(node.operand, depth)
        if isinstance(node.op, (ast.Not, ast.Invert)):
            return ~as_bool(v) if isinstance(v, pd.Series) else (not v)
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return v
        raise self.fail(f"the operator {node_name(node.op)}")

    def visit_BinOp(self, node: ast.BinOp, depth: int):
        if type(node.op) not in BINOPS:
            raise self.fail(f"the operator {node_name(node.op)}")
        left, right = self.value(node.left, depth), self.value(node.right, depth)
        if isinstance(node.op, ast.Mult) and (isinstance(left, (str, list)) or isinstance(right, (str, list))):
            raise self.fail("repeating a string or list with *")  # memory bomb guard
        if isinstance(node.op, ast.Mod) and isinstance(left, str):
            raise self.fail("%-formatting of a string")
        if isinstance(left, (list, _Str, _Method)) or isinstance(right, (list, _Str, _Method)):
            raise self.fail(f"{node_name(node.op)} on a list or accessor")
        if isinstance(node.op, (ast.BitAnd, ast.BitOr, ast.BitXor)):
            left, right = as_bool(left), as_bool(right)
        if isinstance(node.op, ast.Add) and (isinstance(left, pd.Series) or isinstance(right, pd.Series)):
            # string concatenation of columns: make both sides text when either is text
            if is_text(left) or is_text(right):
                left, right = as_text(left), as_text(right)
        try:
            return BINOPS[type(node.op)](left, right)
        except Exception as e:
            raise ExpressionError(
                f"{node_name(node.op)} failed on the data: {type(e).__name__}: {str(e)[:200]}",
                where=f"expression {self.expression[:120]!r}",
                fix="cast with .astype('str') or .astype('float') first",
            ) from None

    def visit_IfExp(self, node: ast.IfExp, depth: int):
        cond = self.value(node.test, depth)
        a, b = self.value(node.body, depth), self.value(node.orelse, depth)
        if isinstance(cond, pd.Series):
            idx = self.obs.index
            a_s = a if isinstance(a, pd.Series) else pd.Series([a] * len(idx), index=idx, dtype=object)
            b_s = b if isinstance(b, pd.Series) else pd.Series([b] * len(idx), index=idx, dtype=object)
            return a_s.where(as_bool(cond), b_s)
        return a if cond else b


def is_text(v) -> bool:
    return isinstance(v, str) or (isinstance(v, pd.Series) and (v.dtype == object or v.dtype.name in ("category", "string")))


def as_text(v):
    return v.astype(str) if isinstance(v, pd.Series) else str(v)


def as_bool(v):
    if isinstance(v, pd.Series):
        if v.dtype == bool:
            return v
        return v.fillna(False).astype(bool)
    return bool(v)


def check_pattern(pat: str, ev: ExprEvaluator) -> None:
    """Regexes are data too: bound their size and refuse nested quantifiers, the usual shape of
    catastrophic backtracking such as ``(a+)+``."""
    if len(pat) > MAX_PATTERN_CHARS:
        raise ev.fail(f"a regex of {len(pat)} characters", f"is too long (max {MAX_PATTERN_CHARS})")
    if re.search(r"\([^)]*[+*}][^)]*\)\s*[+*{]", pat):
        raise ev.fail(f"the regex {pat!r} with a nested quantifier", "could backtrack catastrophically")
    try:
        re.compile(pat)
    except re.error as e:
        raise ev.fail(f"the regex {pat!r}", f"is invalid ({e})") from None


def describe(node: ast.AST) -> str:
    names = {
        "Lambda": "a lambda", "ListComp": "a list comprehension", "SetComp": "a set comprehension",
        "DictComp": "a dict comprehension", "GeneratorExp": "a generator expression",
        "JoinedStr": "an f-string", "FormattedValue": "an f-string", "Await": "await",
        "Yield": "yield", "YieldFrom": "yield", "NamedExpr": "an assignment expression (:=)",
        "Dict": "a dict literal", "Set": "a set literal", "Starred": "a starred expression",
        "Slice": "a slice",
    }
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Attribute):
        return f"the attribute {node.attr!r}"
    if isinstance(node, ast.Call):
        return f"calling {describe(node.func)}"
    return names.get(node_name(node), f"the construct {node_name(node)}")


def evaluate(expression: str, obs: pd.DataFrame) -> pd.Series:
    """Evaluate ``expression`` over ``obs``; always returns a Series aligned with ``obs``."""
    out = ExprEvaluator(expression, obs).run()
    if isinstance(out, (_Str, _Method)) or isinstance(out, pd.DataFrame) or isinstance(out, list):
        raise reject(f"an expression whose value is a {type(out).__name__.strip('_')}", expression,
                     "is not a column of values")
    if not isinstance(out, pd.Series):
        out = pd.Series([out] * len(obs), index=obs.index)
    if len(out) != len(obs):
        raise ExpressionError(f"expression yields {len(out)} values for {len(obs)} cells",
                              where=f"expression {expression[:120]!r}", fix="return one value per cell")
    out.index = obs.index
    return out


def validate_syntax(expression: str) -> None:
    """Check an expression against the whitelist on an empty frame with no data."""
    columns = sorted({n.slice.value for n in ast.walk(ast.parse(expression, mode="eval"))
                      if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant)
                      and isinstance(n.slice.value, str)})
    evaluate(expression, pd.DataFrame({c: pd.Series([], dtype=object) for c in columns}))


__all__ = ["ExpressionError", "evaluate", "validate_syntax", "np"]
