"""The builtin Coder: an action path -> model code (from the template library) + training config.

The output type, ``ModelCode``, is what both Coder policies (builtin and LLM) produce, so the
sandbox and the transcript never care which one wrote the code.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from harmonycell.tools.search.actions import ActionPath, parse_action
from harmonycell.tools.search.code_checks import ensure_safe
from harmonycell.tools.errors import InputError

TEMPLATES = "harmonycell.tools.search.model_templates"


class ModelCode(BaseModel):
    """One node's code: what the sandbox runs (model.py + config.json) and how it was made."""

    action: str
    code: str
    config: dict[str, Any]
    policy: Literal["builtin", "llm"] = "builtin"
    fell_back: bool = False  # the LLM policy gave up and the builtin template was used
    attempts: int = 1
    notes: list[str] = Field(default_factory=list)


def template_text(name: str) -> str:
    return resources.files(TEMPLATES).joinpath(f"{name}.py").read_text()


BUILD = "def build_model(info):"


def render(action: ActionPath) -> str:
    """The model module for a backbone: the shared primitives, then the backbone's template;
    with ``on:SIMPLE``, the simple model's and the network's templates under other builder
    names, then ``_residual`` (whose ``build_model`` puts the network on the simple model)."""
    quote = '"' * 3
    base = action.base
    used = [action.spec.template] + ([base.template, "_residual"] if base else [])
    header = (f"{quote}Model module for action path {action.text()} (rendered by the builtin Coder"
              f" from harmonycell.tools.search.model_templates/{', '.join(u + '.py' for u in used)}).{quote}\n\n")
    if base is None:
        return header + template_text("_common") + "\n\n" + template_text(action.spec.template)
    parts = [template_text("_common"),
             renamed_builder(template_text(base.template), "build_simple_model"),
             renamed_builder(template_text(action.spec.template), "build_network"),
             template_text("_residual")]
    return header + "\n\n".join(parts)


def renamed_builder(text: str, name: str) -> str:
    if text.count(BUILD) != 1:  # a template must define its builder exactly once
        raise InputError(f"a model template defines {text.count(BUILD)} build_model functions",
                         where="model_templates", fix="define build_model(info) once per template")
    return text.replace(BUILD, f"def {name}(info):")


def generate(
    action: str | ActionPath,
    data_dir: Path | None = None,
    *,
    seed: int = 0,
    gene_sets: Path | None = None,
    gene_symbols: list[str] | None = None,
) -> ModelCode:
    """Builtin Coder. ``data_dir`` (the sandbox task data) is needed by backbones that derive
    structure from the training data (pathway-masked: co-expression modules)."""
    path = action if isinstance(action, ActionPath) else parse_action(action)
    config = path.training_config(seed=seed)
    notes: list[str] = []
    if path.backbone == "pathway-masked":
        modules, note = pathway_modules(path, data_dir, seed, gene_sets, gene_symbols)
        if modules:
            config["hparams"]["gene_modules"] = modules
        notes.append(note)
    code = render(path)
    ensure_safe(code, where=f"template for {path.text()}")
    return ModelCode(action=path.text(), code=code, config=config, notes=notes)


def pathway_modules(path: ActionPath, data_dir: Path | None, seed: int,
                    gene_sets: Path | None, gene_symbols: list[str] | None) -> tuple[list[list[int]], str]:
    if data_dir is None and gene_sets is None:
        # no data to learn modules from: the template chunks genes in order (weaker; said so)
        return [], "no task data given to the Coder: genes chunked in order instead of co-expression modules"
    if data_dir is None:
        raise InputError("a gene-set file needs the task data to match its genes", where=path.text(),
                         fix="pass the task's sandbox data folder to the Coder")
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    genes = [str(g) for g in meta["genes"]]
    if gene_sets is not None:
        modules = modules_from_gene_sets(Path(gene_sets), genes, gene_symbols)
        return modules, f"{len(modules)} gene modules from {Path(gene_sets).name}"
    X = np.load(Path(data_dir) / "train.npz")["X"]
    n_mod = int(path.resolved()["n_modules"])
    modules = coexpression_modules(X, n_mod, seed)
    return modules, f"{len(modules)} co-expression modules from {X.shape[0]} training cells"


def coexpression_modules(X: np.ndarray, n_modules: int, seed: int = 0, n_pcs: int = 20) -> list[list[int]]:
    """Gene modules from training co-expression: genes embedded by their (standardised) loadings
    on the top principal axes of the cells x genes matrix, then k-means (cosine). Genes with
    correlated expression share a module. Empty clusters are dropped."""
    X = np.asarray(X, dtype=np.float64)
    n_genes = X.shape[1]
    k = max(1, min(n_modules, n_genes))
    sd = X.std(0)
    Z = (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)
    # genes x components, via SVD of the (small) genes x genes correlation matrix
    C = Z.T @ Z / max(len(Z) - 1, 1)
    vals, vecs = np.linalg.eigh(C)
    order = np.argsort(vals)[::-1][: min(n_pcs, n_genes)]
    emb = vecs[:, order] * np.sqrt(np.clip(vals[order], 0, None))
    norm = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norm > 0, norm, 1.0)
    labels = kmeans(emb, k, seed)
    return [np.flatnonzero(labels == j).tolist() for j in range(k) if (labels == j).any()]


def kmeans(P: np.ndarray, k: int, seed: int, iters: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # k-means++ seeding so modules are spread over the gene embedding
    centers = [P[rng.integers(len(P))]]
    for _ in range(1, k):
        d = np.min(((P[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
        total = d.sum()
        idx = rng.choice(len(P), p=d / total) if total > 0 else rng.integers(len(P))
        centers.append(P[idx])
    C = np.array(centers)
    labels = np.zeros(len(P), dtype=int)
    for _ in range(iters):
        new = np.argmin(((P[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
        if (new == labels).all() and _:
            break
        labels = new
        for j in range(k):
            if (labels == j).any():
                C[j] = P[labels == j].mean(0)
    return labels


def read_gene_sets(path: Path) -> dict[str, list[str]]:
    """GMT (name<TAB>description<TAB>gene...) or JSON {name: [genes]}."""
    if not path.exists():
        raise InputError(f"gene-set file {path} does not exist", where="--gene-sets",
                         fix="give a .gmt or .json gene-set file")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e}", where=str(path),
                             fix='write {"SET_NAME": ["GENE1", "GENE2", ...], ...}') from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise InputError("JSON gene sets must map set names to gene lists", where=str(path),
                             fix='write {"SET_NAME": ["GENE1", "GENE2", ...], ...}')
        return {str(k): [str(g) for g in v] for k, v in data.items()}
    sets = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) >= 3 and fields[0]:
            sets[fields[0]] = [g for g in fields[2:] if g]
    if not sets:
        raise InputError("no gene sets found (expected GMT: name<TAB>description<TAB>genes...)",
                         where=str(path), fix="use tab-separated GMT lines or a .json file")
    return sets


def modules_from_gene_sets(path: Path, genes: list[str], symbols: list[str] | None) -> list[list[int]]:
    index: dict[str, int] = {}
    for i, g in enumerate(genes):
        index.setdefault(g.upper(), i)
    for i, s in enumerate(symbols or []):
        index.setdefault(str(s).upper(), i)
    modules, covered = [], set()
    for genes_in_set in read_gene_sets(path).values():
        hit = sorted({index[g.upper()] for g in genes_in_set if g.upper() in index})
        if len(hit) >= 2:
            modules.append(hit)
            covered.update(hit)
    if not modules:
        raise InputError(f"no gene set in {path.name} has 2 or more of the task's {len(genes)} genes",
                         where="--gene-sets",
                         fix="check the identifiers (symbols or Ensembl ids) match the task's genes")
    rest = [i for i in range(len(genes)) if i not in covered]
    if rest:  # genes in no set still need a path to the output
        modules.append(rest)
    return modules


def cap_epochs(config: dict, action: str, epochs: int | None) -> dict:
    """``epochs`` is a run-wide limit on the path's epochs, unless the path sets epochs itself."""
    path = parse_action(action)
    explicit = any(r.kind == "hparams" and "epochs" in dict(r.values) for r in path.refinements)
    if epochs is None or explicit:
        return config
    return {**config, "epochs": min(int(config["epochs"]), int(epochs))}
