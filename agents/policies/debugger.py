"""The Debugger's policies and its ReAct loop: observe a failure, think of a fix, act, re-run.

- ``observe`` turns a failed run into an ``Observation``: the traceback (the sandbox already hid
  the harness's frames), the error line, the node's code and config, and the data's dimensions.
- ``builtin_think`` is the deterministic catalogue: each rule matches one kind of failure that
  generated model code really hits and writes a patched module or config.
- ``LLMDebugPolicy`` asks a model for a thought and an action (a complete patched module or a
  config patch); the reply is parsed and checked like any other code.
- ``repair`` is the loop itself, shared by the Debugger agent and ``bench/repair.py``: every
  observation, thought and action goes through ``record``; a patched module must pass the same
  static checks as any code before it is re-run; the number of steps is bounded.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel

from harmonycell.agents.policies.llm import CODE_BLOCK, ReplyInvalid
from harmonycell.tools.search.code_checks import check_code

INFO_KEYS = ("n_genes", "n_perts", "n_contexts", "pert_features", "hparams")
MAX_STEPS = 3


class Observation(BaseModel):
    status: str  # the sandbox status: error | timeout | oom | killed | static_check
    error: str  # the last line of the traceback (the exception and its message)
    traceback: str
    code: str
    config: dict
    shapes: dict[str, int] = {}  # n_genes, n_perts, n_contexts, n_train_cells

    def brief(self) -> dict:
        """What the transcript keeps of an observation (the code is in the node folder)."""
        return {"status": self.status, "error": self.error, "shapes": self.shapes,
                "traceback": self.traceback[-1500:]}


class Action(BaseModel):
    thought: str
    rule: str  # the catalogue rule, or "llm"
    kind: Literal["code", "config"]
    code: str
    config: dict


def last_error_line(tail: str) -> str:
    """The exception line of a traceback (the last line that is not a harness note or log)."""
    lines = [ln.strip() for ln in tail.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln) or ln.startswith("RuntimeError"):
            return ln
    return lines[-1] if lines else ""


def data_shapes(data_dir: Path | None) -> dict[str, int]:
    """The task data's dimensions, read from the sandbox data's meta.json (no arrays loaded)."""
    if data_dir is None or not (Path(data_dir) / "meta.json").exists():
        return {}
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    return {"n_genes": len(meta["genes"]), "n_perts": len(meta["perts"]),
            "n_contexts": len(meta["contexts"])}


def observe(status: str, tail: str, code: str, config: dict, data_dir: Path | None) -> Observation:
    return Observation(status=status, error=last_error_line(tail), traceback=tail[-3000:], code=code,
                       config=config, shapes=data_shapes(data_dir))


# ---------------------------------------------------------------------------------------------
# The builtin catalogue. A rule returns (thought, new_code, new_config) or None when it cannot
# say anything useful about this observation.

Fix = tuple[str, str, dict]
NON_FINITE = re.compile(r"FloatingPointError|\bnan\b|\binf\b|\binfinity\b", re.I)
OOM = re.compile(r"out of memory|can't allocate memory|MemoryError|DefaultCPUAllocator", re.I)
MATMUL = re.compile(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)")
SIZE_MATCH = re.compile(r"size of tensor a \((\d+)\) must match the size of tensor b \((\d+)\)")
BROADCAST = re.compile(r"could not broadcast input array from shape \((\d+),?\) into shape \((\d+),?\)")
MODEL_LINE = re.compile(r'File "[^"]*model\.py", line (\d+)')
KNOWN_IMPORTS = {"F": "import torch.nn.functional as F", "nn": "import torch.nn as nn",
                 "np": "import numpy as np", "math": "import math", "torch": "import torch"}
HPARAM_DEFAULTS = {"width": 256, "hidden": 256, "hidden_dim": 256, "depth": 2, "layers": 2,
                   "n_layers": 2, "dropout": 0.1, "latent": 32, "latent_dim": 32, "emb_dim": 64}


def _calls(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in names:
                out.append(node)
    return sorted(out, key=lambda c: (c.lineno, c.col_offset))


def _replace_span(code: str, node: ast.AST, text: str) -> str:
    lines = code.splitlines(keepends=True)
    start = sum(len(ln) for ln in lines[: node.lineno - 1]) + node.col_offset
    end = sum(len(ln) for ln in lines[: node.end_lineno - 1]) + node.end_col_offset
    return code[:start] + text + code[end:]


def _src(code: str, node: ast.AST) -> str:
    return ast.get_source_segment(code, node) or ""


def _n_genes_expr(code: str, tree: ast.Module, at: ast.AST) -> tuple[str, str]:
    """An expression for the number of genes valid at ``at``; may rewrite build_model to expose it."""
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.lineno <= at.lineno <= fn.end_lineno:
            names = {a.arg for a in fn.args.args} | {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign)
                                                     for t in n.targets if isinstance(t, ast.Name)}
            if "info" in names:
                return 'info["n_genes"]', code
            for cand in ("n_genes", "num_genes", "n_gene", "genes"):
                if cand in names:
                    return cand, code
    # Not reachable by name here: build_model records it in a module global first.
    builder = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_model")
    arg = builder.args.args[0].arg
    first = builder.body[0]
    indent = " " * first.col_offset
    lines = code.splitlines(keepends=True)
    inject = f"{indent}global _N_GENES\n{indent}_N_GENES = {arg}[\"n_genes\"]\n"
    lines.insert(first.lineno - 1, inject)
    return "_N_GENES", "_N_GENES = None\n" + "".join(lines)


def rule_missing_build_model(obs: Observation) -> Fix | None:
    if "build_model" not in obs.error and "build_model" not in obs.traceback[-400:]:
        return None
    tree = ast.parse(obs.code)
    if any(isinstance(n, ast.FunctionDef) and n.name == "build_model" for n in tree.body):
        return None
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and len(n.args.args) == 1
             and re.search(r"model|build|make|create|get", n.name)]
    if funcs:
        body = f"return {funcs[0].name}(info)"
        why = f"the module builds its model in {funcs[0].name}(info): expose it as build_model"
    else:
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)
                   and any(isinstance(f, ast.FunctionDef) and f.name == "forward" for f in n.body)]
        if not classes:
            return None
        cls = classes[-1]  # the top-level model is usually defined last
        init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
        params = [a.arg for a in init.args.args[1:]] if init else []
        if params == ["info"] or len(params) == 1:
            body = f"return {cls.name}(info)"
        elif all(p in INFO_KEYS or p in HPARAM_DEFAULTS for p in params):
            kw = ", ".join(f'{p}=info["{p}"]' if p in INFO_KEYS
                           else f'{p}=info.get("hparams", {{}}).get("{p}", {HPARAM_DEFAULTS[p]})'
                           for p in params)
            body = f"return {cls.name}({kw})"
        else:
            return None
        why = f"no build_model(info): add one that constructs {cls.name}"
    code = obs.code.rstrip() + f"\n\n\ndef build_model(info):\n    {body}\n"
    return why, code, obs.config


def rule_undefined_name(obs: Observation) -> Fix | None:
    m = re.search(r"NameError: name '(\w+)' is not defined", obs.error)
    if not m or m.group(1) not in KNOWN_IMPORTS:
        return None
    line = KNOWN_IMPORTS[m.group(1)]
    return (f"{m.group(1)} is used but never imported: add `{line}`", line + "\n" + obs.code, obs.config)


def rule_misspelt_attribute(obs: Observation) -> Fix | None:
    m = re.search(r"module '(torch(?:\.nn(?:\.functional)?)?)' has no attribute '(\w+)'", obs.error)
    if not m:
        return None
    import importlib

    mod = importlib.import_module(m.group(1))
    close = difflib.get_close_matches(m.group(2), [n for n in dir(mod) if not n.startswith("_")], n=1,
                                      cutoff=0.6)
    if not close and m.group(2).lower() in {n.lower() for n in dir(mod)}:
        close = [n for n in dir(mod) if n.lower() == m.group(2).lower()]
    if not close:
        return None
    code = re.sub(rf"\.{m.group(2)}\b", f".{close[0]}", obs.code)
    return (f"{m.group(1)}.{m.group(2)} does not exist: use {m.group(1)}.{close[0]}", code, obs.config)


def rule_missing_key(obs: Observation) -> Fix | None:
    m = re.search(r"KeyError: '(\w+)'", obs.error)
    if not m:
        return None
    key = m.group(1)
    close = difflib.get_close_matches(key, INFO_KEYS, n=1, cutoff=0.5)
    aliases = {"num_genes": "n_genes", "genes": "n_genes", "n_gene": "n_genes", "num_perts": "n_perts",
               "n_perturbations": "n_perts", "num_contexts": "n_contexts", "features": "pert_features"}
    target = aliases.get(key) or (close[0] if close else None)
    if target:
        code = re.sub(rf"""\[(['"]){key}\1\]""", f'["{target}"]', obs.code)
        if code != obs.code:
            return (f"info has no key {key!r}; the contract calls it {target!r}", code, obs.config)
    # a hyperparameter the action path did not set: read it with a default
    pattern = re.compile(rf"""(\w+(?:\[['"]hparams['"]\])?)\[(['"]){key}\2\]""")
    default = HPARAM_DEFAULTS.get(key)
    if default is None or not pattern.search(obs.code):
        return None
    code = pattern.sub(lambda mm: f'{mm.group(1)}.get("{key}", {default})', obs.code)
    return (f"hyperparameter {key!r} is not always set: read it with default {default}", code, obs.config)


def _model_line_attr(obs: Observation) -> str | None:
    """The ``self.<attr>(`` called on the deepest model.py line of the traceback."""
    lines = MODEL_LINE.findall(obs.traceback)
    if not lines:
        return None
    src = obs.code.splitlines()
    n = int(lines[-1])
    if n > len(src):
        return None
    m = re.search(r"self\.(\w+)\(", src[n - 1])
    return m.group(1) if m else None


def rule_linear_in_features(obs: Observation) -> Fix | None:
    m = MATMUL.search(obs.error)
    if not m:
        return None
    got, expected = int(m.group(2)), int(m.group(3))
    tree = ast.parse(obs.code)
    linears = [c for c in _calls(tree, {"Linear"}) if c.args]
    if not linears:
        return None
    literal = [c for c in linears if isinstance(c.args[0], ast.Constant) and c.args[0].value == expected]
    attr = _model_line_attr(obs)
    by_attr = []
    if attr:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == attr
                                                     for t in node.targets)):
                inner = [c for c in linears if node.lineno <= c.lineno <= node.end_lineno]
                by_attr += inner[:1]  # in a Sequential, the first layer takes the input
    chosen = literal[:1] or by_attr[:1]
    if not chosen:
        return None
    code = obs.code
    for call in sorted(chosen, key=lambda c: (c.lineno, c.col_offset), reverse=True):
        rest = ", ".join(_src(obs.code, a) for a in call.args[1:])
        kws = ", ".join(f"{k.arg}={_src(obs.code, k.value)}" for k in call.keywords if k.arg != "in_features")
        prefix = _src(obs.code, call.func).rsplit("Linear", 1)[0]
        code = _replace_span(code, call, f"{prefix}LazyLinear({', '.join(x for x in (rest, kws) if x)})")
    return (f"a linear layer expects {expected} input features but receives {got}: let it infer its "
            f"input size (LazyLinear, materialised by one dry forward pass in build_model)",
            _with_dry_run(code), obs.config)


DRY_RUN = '''

def build_model(info):
    # lazy layers take their input sizes from one forward pass on zeros, before training starts
    model = _build_model_unprobed(info)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        n, p = info["n_genes"], info["n_perts"]
        model(torch.zeros(2, n), {"mask": torch.zeros(2, p), "dose": torch.zeros(2, p)})
    model.train(was_training)
    return model
'''


def _with_dry_run(code: str) -> str:
    """Rename build_model and wrap it in one that materialises lazy layers (once)."""
    if "_build_model_unprobed" in code:
        return code
    code = re.sub(r"^def build_model\(", "def _build_model_unprobed(", code, flags=re.M)
    if not re.search(r"^import torch\b", code, re.M):
        code = "import torch\n" + code
    return code.rstrip() + "\n" + DRY_RUN


def rule_output_width(obs: Observation) -> Fix | None:
    n_genes = obs.shapes.get("n_genes")
    m = SIZE_MATCH.search(obs.error) or BROADCAST.search(obs.error)
    if not m or n_genes is None:
        return None
    a, b = int(m.group(1)), int(m.group(2))
    if n_genes not in (a, b) or a == b:
        return None
    wrong = b if a == n_genes else a
    tree = ast.parse(obs.code)
    linears = [c for c in _calls(tree, {"Linear", "LazyLinear"}) if c.args]
    out_pos = lambda c: 0 if c.func.attr == "LazyLinear" else 1  # noqa: E731
    consts = {t.id for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
              and n.value.value == wrong for t in n.targets if isinstance(t, ast.Name)}

    def out_arg(c):
        return c.args[out_pos(c)] if len(c.args) > out_pos(c) else None

    cands = [c for c in linears if out_arg(c) is not None and (
        (isinstance(out_arg(c), ast.Constant) and out_arg(c).value == wrong)
        or (isinstance(out_arg(c), ast.Name) and out_arg(c).id in consts))]
    if not cands:  # the output head, usually the last layer defined, sized by the wrong quantity
        named = [c for c in linears if out_arg(c) is not None
                 and re.search(r"pert|\bp\b|hidden|width|latent|\bh\b", _src(obs.code, out_arg(c)))]
        cands = named[-1:]
    if not cands:
        return None
    call = cands[-1]
    expr, code = _n_genes_expr(obs.code, tree, call)
    tree = ast.parse(code)  # line numbers may have moved
    call = next(c for c in _calls(tree, {"Linear", "LazyLinear"})
                if _src(code, c) == _src(obs.code, cands[-1]))
    arg = call.args[out_pos(call)]
    code = _replace_span(code, arg, expr)
    return (f"the model outputs {wrong} values per cell where the data has {n_genes} genes: the output "
            f"layer must produce n_genes", code, obs.config)


def rule_dtype(obs: Observation) -> Fix | None:
    if not re.search(r"dtype|scalar type|Double|Long", obs.error):
        return None
    code = obs.code
    for old, new in ((".double()", ".float()"), ("torch.float64", "torch.float32"),
                     ("torch.double", "torch.float32"), ("np.float64", "np.float32")):
        code = code.replace(old, new)
    if "Long" in obs.error:
        code = code.replace(".long()", ".float()")
    try:
        calls = _calls(ast.parse(code), {"from_numpy", "as_tensor", "tensor"})
    except SyntaxError:
        calls = []
    for call in reversed(calls):  # numpy arrays default to float64: cast where they enter torch
        after = code.splitlines(keepends=True)[call.end_lineno - 1][call.end_col_offset:]
        if not after.startswith(".float()") and not any(k.arg == "dtype" for k in call.keywords):
            code = _replace_span(code, call, _src(code, call) + ".float()")
    if code == obs.code:
        return None
    return ("tensors of different dtypes meet: compute in float32 throughout", code, obs.config)


def rule_device(obs: Observation) -> Fix | None:
    if not re.search(r"CUDA|cuda|same device|NVIDIA driver", obs.error + obs.traceback[-600:]):
        return None
    tree = ast.parse(obs.code)
    code_lines = obs.code.splitlines(keepends=True)
    forwards = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "forward"
                and len(f.args.args) >= 2]
    for f in forwards:
        x = f.args.args[1].arg
        for i in range(f.lineno - 1, f.end_lineno):
            ln = code_lines[i].replace(".cuda()", f".to({x}.device)")
            ln = re.sub(r"""device=(['"])cuda(:\d+)?\1""", f"device={x}.device", ln)
            code_lines[i] = ln
    code = "".join(code_lines).replace(".cuda()", "")
    code = re.sub(r"""\.to\((['"])cuda(:\d+)?\1\)""", "", code)
    code = re.sub(r""",?\s*device=(['"])cuda(:\d+)?\1""", "", code)
    if code == obs.code:
        return None
    return ("the code pins tensors to CUDA: let the harness place the model, and create tensors on the "
            "input's device", code, obs.config)


def rule_oom(obs: Observation) -> Fix | None:
    if obs.status != "oom" and not OOM.search(obs.error):
        return None
    cfg = dict(obs.config)
    bs = int(cfg.get("batch_size", 128))
    if bs > 16:
        cfg["batch_size"] = max(16, bs // 2)
        return (f"out of memory: halve the batch size ({bs} -> {cfg['batch_size']})", obs.code, cfg)
    hp = dict(cfg.get("hparams") or {})
    width = int(hp.get("width", 256))
    if width <= 32:
        return None
    hp["width"] = width // 2
    cfg["hparams"] = hp
    return (f"out of memory at batch size {bs}: halve the width ({width} -> {hp['width']})", obs.code, cfg)


def rule_non_finite(obs: Observation) -> Fix | None:
    # Matched on the error line only, as whole words: "info" or "inference" are not "inf".
    if not NON_FINITE.search(obs.error):
        return None
    code = re.sub(r"torch\.exp\(([\w.]+)\)", r"torch.exp(\1.clamp(-15.0, 15.0))", obs.code)
    code = re.sub(r"torch\.log\(([\w.]+)\)", r"torch.log(\1.clamp_min(1e-6))", code)
    cfg = {**obs.config, "lr": float(obs.config.get("lr", 1e-3)) / 10, "loss": "huber"}
    guarded = " and clamp exp/log arguments" if code != obs.code else ""
    return (f"training diverged (non-finite values): lower the learning rate ten-fold, use the Huber "
            f"loss{guarded}", code, cfg)


def rule_timeout(obs: Observation) -> Fix | None:
    if obs.status != "timeout":
        return None
    cfg = {**obs.config, "epochs": max(5, int(obs.config.get("epochs", 100)) // 4), "patience": 3}
    return ("ran out of time: cap the epochs and tighten early stopping", obs.code, cfg)


def rule_pert_dict(obs: Observation) -> Fix | None:
    if "not dict" not in obs.error and "'dict' object has no attribute" not in obs.error:
        return None
    tree = ast.parse(obs.code)
    for f in ast.walk(tree):
        if isinstance(f, ast.FunctionDef) and f.name == "forward" and len(f.args.args) >= 3:
            p = f.args.args[2].arg
            if re.search(rf"""\b{p}\[['"]""", obs.code):
                return None  # the code already reads the dict somewhere; a rewrite would break it
            first = f.body[0]
            lines = obs.code.splitlines(keepends=True)
            indent = " " * first.col_offset
            lines.insert(first.lineno - 1,
                         f'{indent}{p} = {p}["mask"].float() * {p}["dose"].float()  # pert is a dict\n')
            return ("pert is a dict {mask, dose}, not a tensor: use mask x dose", "".join(lines), obs.config)
    return None


def rule_missing_super_init(obs: Observation) -> Fix | None:
    if "before Module.__init__() call" not in obs.error:
        return None
    tree = ast.parse(obs.code)
    lines = obs.code.splitlines(keepends=True)
    inits = [f for c in tree.body if isinstance(c, ast.ClassDef) for f in c.body
             if isinstance(f, ast.FunctionDef) and f.name == "__init__" and "super()" not in _src(obs.code, f)]
    for f in sorted(inits, key=lambda f: f.lineno, reverse=True):
        first = f.body[0]
        skip = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)  # docstring
        at = (first.end_lineno if skip else first.lineno - 1)
        lines.insert(at, " " * first.col_offset + "super().__init__()\n")
    if not inits:
        return None
    return ("sub-modules are assigned before nn.Module.__init__ ran: call super().__init__() first",
            "".join(lines), obs.config)


def rule_tuple_output(obs: Observation) -> Fix | None:
    if "'tuple' object has no attribute" not in obs.error and "not tuple" not in obs.error:
        return None
    tree = ast.parse(obs.code)
    code = obs.code
    rets = [r for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in ("forward", "predict")
            for r in ast.walk(f) if isinstance(r, ast.Return) and isinstance(r.value, ast.Tuple)]
    for r in sorted(rets, key=lambda r: (r.lineno, r.col_offset), reverse=True):
        code = _replace_span(code, r.value, _src(obs.code, r.value.elts[0]))
    if code == obs.code:
        return None
    return ("forward returns a tuple where the harness expects the prediction tensor: return the first "
            "element", code, obs.config)


CATALOGUE: tuple[tuple[str, Callable[[Observation], Fix | None]], ...] = (
    ("missing_build_model", rule_missing_build_model),
    ("missing_super_init", rule_missing_super_init),
    ("undefined_name", rule_undefined_name),
    ("misspelt_attribute", rule_misspelt_attribute),
    ("missing_key", rule_missing_key),
    ("linear_in_features", rule_linear_in_features),
    ("output_width", rule_output_width),
    ("dtype", rule_dtype),
    ("device", rule_device),
    ("oom", rule_oom),
    ("non_finite", rule_non_finite),
    ("timeout", rule_timeout),
    ("pert_dict", rule_pert_dict),
    ("tuple_output", rule_tuple_output),
)


def builtin_think(obs: Observation, tried: set[str] = frozenset()) -> Action | None:
    """The first catalogue rule that matches and proposes something not tried before."""
    for name, rule in CATALOGUE:
        try:
            fix = rule(obs)
        except (SyntaxError, ValueError, StopIteration, IndexError, KeyError, AttributeError):
            fix = None  # a rule that cannot read this code has nothing to say about it
        if fix is None:
            continue
        thought, code, config = fix
        key = _action_key(code, config)
        if key in tried:
            continue
        return Action(thought=thought, rule=name, kind="code" if code != obs.code else "config",
                      code=code, config=config)
    return None


def _action_key(code: str, config: dict) -> str:
    return code + "\0" + json.dumps(config, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# The LLM policy


SYSTEM = ("You repair PyTorch model modules that failed in a training sandbox. Think in one line, "
          "then act: reply with a complete corrected module in one ```python block, or only a JSON "
          "object of training-config changes in one ```json block.")
REASK = ("Reply again: one line starting THOUGHT:, then either the complete module in one ```python "
         "block or a config patch in one ```json block.")


def render_prompt(obs: Observation) -> str:
    from importlib import resources

    template = resources.files("harmonycell.prompts").joinpath("debugger.md").read_text()
    return (template.replace("{error}", obs.error).replace("{status}", obs.status)
            .replace("{traceback}", obs.traceback[-2500:]).replace("{code}", obs.code)
            .replace("{config}", json.dumps({k: v for k, v in obs.config.items() if k != "hparams"}))
            .replace("{hparams}", json.dumps(obs.config.get("hparams", {}), default=str)[:600])
            .replace("{shapes}", json.dumps(obs.shapes)))


CONFIG_KEYS = {"lr", "batch_size", "epochs", "patience", "loss", "weight_decay", "max_train_seconds"}


def parse_fix(reply: str, obs: Observation) -> Action:
    """The fix an LLM's reply proposes (an ``Action`` of the repair loop, not a search path of
    ``tools.search.actions``); ``ReplyInvalid`` with the reason when it is not usable."""
    m = re.search(r"THOUGHT:\s*(.+)", reply)
    thought = m.group(1).strip()[:300] if m else "(no thought given)"
    blocks = CODE_BLOCK.findall(reply)
    if blocks:
        code = max(blocks, key=len).strip() + "\n"
        problems = check_code(code)
        if problems:
            raise ReplyInvalid("the patched module fails the static checks: " + "; ".join(problems))
        if code.strip() == obs.code.strip():
            raise ReplyInvalid("the module is unchanged; a re-run would fail the same way")
        return Action(thought=thought, rule="llm", kind="code", code=code, config=obs.config)
    js = re.findall(r"```json[ \t]*\n(.*?)```", reply, re.S)
    if js:
        try:
            patch = json.loads(js[-1])
        except json.JSONDecodeError as e:
            raise ReplyInvalid(f"the config patch is not valid JSON ({e.msg})") from None
        if not isinstance(patch, dict) or not patch:
            raise ReplyInvalid("the config patch must be a non-empty JSON object")
        bad = sorted(set(patch) - CONFIG_KEYS)
        if bad:
            raise ReplyInvalid(f"config keys {bad} cannot be changed; allowed: {sorted(CONFIG_KEYS)}")
        return Action(thought=thought, rule="llm", kind="config", code=obs.code,
                      config={**obs.config, **patch})
    raise ReplyInvalid("no ```python module and no ```json config patch in the reply")


class LLMDebugPolicy:
    """Thinks with a model; an unusable reply (after re-asks) or a spent budget returns None."""

    def __init__(self, session):
        self.session = session  # harmonycell.agents.policies.llm.LLMSession

    def think(self, obs: Observation) -> tuple[Action | None, str]:
        out = self.session.ask("Debugger", "repair", SYSTEM, render_prompt(obs),
                               lambda r: parse_fix(r, obs), reask=REASK)
        if out.value is not None:
            return out.value, f"LLM action after {out.attempts} reply(ies)"
        return None, out.why_failed()


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class RunOutcome:
    ok: bool
    status: str
    tail: str
    result: object = None  # what the runner returns on success (e.g. NodeExecuted)


@dataclass
class RepairOutcome:
    repaired: bool
    steps: int
    actions: list[Action] = field(default_factory=list)
    last_error: str = ""
    result: object = None


Recorder = Callable[[str, dict], None]


def repair(obs: Observation, run: Callable[[str, dict], RunOutcome], *, data_dir: Path | None = None,
           llm: LLMDebugPolicy | None = None, max_steps: int = MAX_STEPS,
           record: Recorder = lambda kind, payload: None) -> RepairOutcome:
    """Observe -> think -> act -> re-run, at most ``max_steps`` actions.

    Think asks the LLM policy first when there is one, and falls back to the builtin catalogue
    (the fallback is recorded). An action whose module fails the static checks is never run.
    """
    out = RepairOutcome(repaired=False, steps=0, last_error=obs.error)
    tried: set[str] = {_action_key(obs.code, obs.config)}
    for step in range(1, max_steps + 1):
        record("observe", {"step": step, **obs.brief()})
        action, how = None, ""
        if llm is not None:
            action, how = llm.think(obs)
            if action is not None and _action_key(action.code, action.config) in tried:
                action, how = None, "the LLM repeated an action already tried"
            if action is None:
                record("fallback", {"step": step, "to": "builtin", "why": how})
        if action is None:
            action = builtin_think(obs, tried)
            how = "builtin catalogue"
        if action is None:
            record("think", {"step": step, "thought": "no known fix for this failure", "policy": how})
            break
        record("think", {"step": step, "thought": action.thought, "rule": action.rule, "policy": how})
        problems = check_code(action.code) if action.kind == "code" else []
        changed = {k: action.config[k] for k in action.config if action.config.get(k) != obs.config.get(k)}
        record("act", {"step": step, "kind": action.kind, "rule": action.rule, "config_changes": changed,
                       "code_diff": _diff(obs.code, action.code), "static_check_problems": problems})
        tried.add(_action_key(action.code, action.config))
        out.actions.append(action)
        out.steps = step
        if problems:  # the patch is refused like any other code; think again from the same failure
            continue
        res = run(action.code, action.config)
        record("result", {"step": step, "ok": res.ok, "status": res.status,
                          "error": "" if res.ok else last_error_line(res.tail)})
        if res.ok:
            out.repaired, out.result, out.last_error = True, res.result, ""
            return out
        obs = observe(res.status, res.tail, action.code, action.config, data_dir)
        out.last_error = obs.error
    return out


def _diff(old: str, new: str, limit: int = 40) -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), "model.py", "model.py",
                                      lineterm="", n=1))
    return "\n".join(lines[:limit]) + ("\n..." if len(lines) > limit else "")
