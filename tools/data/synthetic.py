"""Synthetic perturbation data: one simulated biology written under several lab schemas.

The biology: genes belong to co-regulated programs whose activity varies from cell to cell;
perturbing a gene knocks it down and shifts the program it belongs to (sparse effects);
combinations add their singles' effects plus a small interaction. Because a perturbed gene's
effect follows its program, and programs are visible as gene-gene covariation in control cells,
effects of perturbations never seen in training are learnable from the data.

The same biology is written as two ``.h5ad`` files with incompatible conventions:
- lab A: raw integer counts, perturbation in ``guide_target`` (control ``non-targeting``,
  combinations ``A;B``, a few cells with no guide detected = NaN), ``cell_line``, ``replicate``,
  gene symbols as the var index;
- lab B: log-normalised values, GEARS-style ``condition`` (``ctrl``, ``A+ctrl``, ``A+B``),
  ``cell_type``, ``donor``, Ensembl-like var index with symbols in ``gene_name``.
The ground truth (log-fold effects per condition) goes to ``truth.npz`` beside them, never into
the ``.h5ad`` files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from harmonycell.tools.record import atomic
from harmonycell.tools.schema import canonical_condition


@dataclass(frozen=True)
class SimConfig:
    n_genes: int = 500
    n_programs: int = 10
    program_size: int = 35
    n_perturbed_genes: int = 30
    n_combos: int = 8
    cells_per_condition: int = 40
    n_controls: int = 500  # per lab
    no_guide_fraction: float = 0.02  # lab A cells with no detected guide
    library_size: float = 4000.0
    seed: int = 0


@dataclass
class Biology:
    symbols: list[str]
    ensembl: list[str]
    base: np.ndarray  # (contexts, genes) log rates
    contexts: list[str]
    loadings: np.ndarray  # (programs, genes)
    effects: dict[str, np.ndarray] = field(default_factory=dict)  # condition -> log-fold (genes,)


def simulate_biology(cfg: SimConfig) -> Biology:
    rng = np.random.default_rng(cfg.seed)
    g = cfg.n_genes
    symbols = [f"SG{i:04d}" for i in range(g)]
    ensembl = [f"ENSG9{i:010d}" for i in range(g)]
    contexts = ["LineA", "LineB"]
    base_shared = rng.normal(-0.5, 1.2, g)
    base = np.stack([base_shared + rng.normal(0, 0.25, g) for _ in contexts])
    loadings = np.zeros((cfg.n_programs, g))
    members = []
    for k in range(cfg.n_programs):
        idx = rng.choice(g, size=cfg.program_size, replace=False)
        loadings[k, idx] = rng.uniform(0.4, 1.0, cfg.program_size) * rng.choice([-1, 1], cfg.program_size)
        members.append(idx)
    bio = Biology(symbols, ensembl, base, contexts, loadings)
    # Perturbed genes are program members, so their effect follows their program.
    targets = []
    for k in range(cfg.n_perturbed_genes):
        prog = k % cfg.n_programs
        cand = [i for i in members[prog] if i not in targets and base_shared[i] > -0.5]
        cand = cand or [i for i in members[prog] if i not in targets]
        gene = int(rng.choice(cand))
        targets.append(gene)
        effect = -rng.uniform(0.8, 1.5) * loadings[prog] * np.sign(loadings[prog, gene])
        effect[gene] = -rng.uniform(1.5, 2.5)  # the knock-down itself
        bio.effects[symbols[gene]] = effect
    singles = list(bio.effects)
    for _ in range(cfg.n_combos):
        a, b = rng.choice(len(singles), size=2, replace=False)
        name = canonical_condition([singles[a], singles[b]])
        if name in bio.effects:
            continue
        inter = np.zeros(g)
        inter[rng.choice(g, size=5, replace=False)] = rng.normal(0, 0.3, 5)
        bio.effects[name] = bio.effects[singles[a]] + bio.effects[singles[b]] + inter
    return bio


def sample_counts(bio: Biology, ctx: int, effects: np.ndarray, cfg: SimConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """Counts for cells whose rows of ``effects`` are their log-fold effects (cells x genes)."""
    n = effects.shape[0]
    z = rng.normal(0, 0.35, (n, bio.loadings.shape[0]))  # program activity per cell
    log_rate = bio.base[ctx] + z @ bio.loadings + effects
    rate = np.exp(log_rate)
    rate = rate / rate.sum(1, keepdims=True) * cfg.library_size * rng.lognormal(0, 0.25, (n, 1))
    return rng.poisson(rate).astype(np.int32)


def lab_cells(bio: Biology, ctx: int, conditions: list[str], cfg: SimConfig,
              rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    labels = ["control"] * cfg.n_controls
    for c in conditions:
        labels += [c] * cfg.cells_per_condition
    g = len(bio.symbols)
    eff = np.stack([bio.effects[c] if c != "control" else np.zeros(g) for c in labels])
    return sample_counts(bio, ctx, eff, cfg, rng), labels


def log_normalise(counts: np.ndarray) -> np.ndarray:
    lib = counts.sum(1, keepdims=True).clip(min=1)
    return np.log1p(counts / lib * 1e4).astype(np.float32)


def lab_a(bio: Biology, conditions: list[str], cfg: SimConfig, rng: np.random.Generator) -> AnnData:
    counts, labels = lab_cells(bio, 0, conditions, cfg, rng)
    guide = pd.Series(["non-targeting" if c == "control" else c.replace("+", ";") for c in labels],
                      dtype=object)
    lost = rng.random(len(guide)) < cfg.no_guide_fraction
    guide[lost] = np.nan
    obs = pd.DataFrame({
        "guide_target": guide.to_numpy(),
        "cell_line": "LineA",
        "replicate": rng.choice(["rep1", "rep2"], len(labels)),
    }, index=[f"A_cell{i:05d}" for i in range(len(labels))])
    var = pd.DataFrame(index=pd.Index(bio.symbols, name=None))
    return AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)


def lab_b(bio: Biology, conditions: list[str], cfg: SimConfig, rng: np.random.Generator) -> AnnData:
    counts, labels = lab_cells(bio, 1, conditions, cfg, rng)

    def gears(c: str) -> str:
        if c == "control":
            return "ctrl"
        parts = c.split("+")
        return f"{parts[0]}+ctrl" if len(parts) == 1 else "+".join(parts)

    obs = pd.DataFrame({
        "condition": [gears(c) for c in labels],
        "cell_type": "LineB",
        "donor": rng.choice(["d1", "d2", "d3"], len(labels)),
    }, index=[f"B_cell{i:05d}" for i in range(len(labels))])
    var = pd.DataFrame({"gene_name": bio.symbols}, index=pd.Index(bio.ensembl))
    return AnnData(X=sp.csr_matrix(log_normalise(counts)), obs=obs, var=var)


def write_synthetic(out_dir: Path, cfg: SimConfig | None = None) -> list[Path]:
    """Simulate and write ``labA_counts.h5ad``, ``labB_lognorm.h5ad`` and ``truth.npz``."""
    cfg = cfg or SimConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bio = simulate_biology(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    conds = list(bio.effects)
    singles = [c for c in conds if "+" not in c]
    combos = [c for c in conds if "+" in c]
    # The labs overlap on part of the perturbation panel; each also has its own.
    half = len(singles) // 2
    third = len(singles) // 3
    a_conds = singles[: half + third] + combos[: len(combos) // 2 + 1]
    b_conds = singles[half - third :] + combos[len(combos) // 2 - 1 :]
    paths = [out_dir / "labA_counts.h5ad", out_dir / "labB_lognorm.h5ad"]
    for path, adata in zip(paths, (lab_a(bio, a_conds, cfg, rng), lab_b(bio, b_conds, cfg, rng))):
        atomic.write_with(path, lambda p, a=adata: a.write_h5ad(p))
    names = sorted(bio.effects)
    atomic.write_with(out_dir / "truth.npz", lambda p: _save_truth(p, bio, names))
    return paths


def _save_truth(path: Path, bio: Biology, names: list[str]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, conditions=np.array(names), effects=np.stack([bio.effects[n] for n in names]),
                 symbols=np.array(bio.symbols), ensembl=np.array(bio.ensembl),
                 base=bio.base, contexts=np.array(bio.contexts))


def load_truth(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
