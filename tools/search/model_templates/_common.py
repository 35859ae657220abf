# --- shared primitives (harmonycell.tools.search.model_templates._common) ---
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def hp(info, name, default):
    """A hyperparameter from info['hparams'] (set by the action path's refinements)."""
    return (info.get("hparams") or {}).get(name, default)


def trunk_hparams(info):
    """(width, depth, embedding size, dropout) shared by the MLP-style backbones."""
    return (int(hp(info, "width", 256)), int(hp(info, "depth", 2)),
            int(hp(info, "emb_dim", 64)), float(hp(info, "dropout", 0.1)))


class PertEncoder(nn.Module):
    """Perturbation embedding: sum over the active perturbations (mask x dose) of a learnable
    per-perturbation vector plus a projection of the perturbation's data-derived feature.

    The learnable table starts at zero, so a perturbation never seen in training contributes only
    through its feature (for a gene: its loadings in a PCA of the training expression). During
    training the learnable part is dropped per cell with probability ``learned_drop`` so the
    feature path is forced to carry the signal that transfers to unseen perturbations.
    """

    def __init__(self, info, emb_dim, learned_drop=0.5):
        super().__init__()
        feats = torch.as_tensor(info["pert_features"], dtype=torch.float32)
        self.register_buffer("feats", feats.clone())
        n_perts, k = feats.shape
        self.learned = nn.Parameter(torch.zeros(n_perts, emb_dim))
        self.proj = nn.Sequential(nn.Linear(k, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim))
        self.learned_drop = float(learned_drop)

    def forward(self, pert):
        w = pert["mask"].float() * pert["dose"].float()
        z_feat = w @ self.proj(self.feats)
        z_learn = w @ self.learned
        if self.training and self.learned_drop > 0:
            keep = (torch.rand(w.shape[0], 1, device=w.device) >= self.learned_drop).float()
            z_learn = z_learn * keep
        return z_feat + z_learn


class ResBlock(nn.Module):
    """Pre-norm residual MLP block."""

    def __init__(self, width, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h):
        return h + self.fc2(self.drop(F.gelu(self.fc1(self.norm(h)))))


def zero_init(linear):
    """Start a delta head at zero so an untrained model predicts x_ctrl (the residual prior)."""
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def recon_loss(kind, pred, target):
    if kind == "huber":
        return F.huber_loss(pred, target, delta=1.0)
    return F.mse_loss(pred, target)


def pert_groups(pert):
    """One id per distinct perturbation (mask x dose row) in the batch: the cells of one
    perturbation form a population (a set)."""
    return torch.unique(pert["mask"] * pert["dose"], dim=0, return_inverse=True)[1]


def group_means(group, *xs):
    """Each tensor's mean per group id, in group order."""
    n = int(group.max()) + 1
    count = torch.zeros(n, 1, device=group.device).index_add_(0, group, torch.ones(len(group), 1, device=group.device))
    return [torch.zeros(n, x.shape[1], device=x.device).index_add_(0, group, x) / count for x in xs]


def training_effects(data):
    """Pseudo-bulk effects of the training perturbations, for the closed-form (simple) models.

    ``data`` is what the harness hands ``fit``: training cells only (``X``, ``mask``, ``dose``,
    ``context``, ``is_control``, ``hold``: the inner early-stopping split) and training controls
    (``ctrl_X``, ``ctrl_context``). Returns (W, D, held): one row per distinct perturbation
    (mask x dose) -- W its weights over the vocabulary, D its mean effect (cell minus its context's
    control mean, averaged), held whether its cells are in the inner split."""
    X = np.asarray(data["X"], dtype=np.float64)
    ctx = np.asarray(data["context"])
    ctrl_mean = {}
    for c in np.unique(ctx):
        rows = np.asarray(data["ctrl_context"]) == c
        ctrl_mean[c] = np.asarray(data["ctrl_X"])[rows].mean(0) if rows.any() else np.asarray(data["ctrl_X"]).mean(0)
    pert = ~np.asarray(data["is_control"], dtype=bool)
    eff = X[pert] - np.stack([ctrl_mean[c] for c in ctx[pert]])
    w = (np.asarray(data["mask"], dtype=np.float64) * np.asarray(data["dose"], dtype=np.float64))[pert]
    keys, group = np.unique(w, axis=0, return_inverse=True)
    group = group.ravel()
    n = np.bincount(group).astype(np.float64)
    D = np.zeros((len(keys), X.shape[1]))
    np.add.at(D, group, eff)
    D /= n[:, None]
    held = np.zeros(len(keys), dtype=bool)
    np.logical_or.at(held, group, np.asarray(data["hold"], dtype=bool)[pert])
    return keys, D, held


def standardised(F):
    """Feature columns centred and scaled over the perturbations that have a feature; a row with
    none (a drug, an unmeasured gene) stays zero, so it still carries no information."""
    F = np.asarray(F, dtype=np.float64)
    has = np.abs(F).sum(1) > 0
    if not has.any():
        return F
    sd = F[has].std(0)
    out = (F - F[has].mean(0)) / np.where(sd > 0, sd, 1.0)
    out[~has] = 0.0
    return out


def feature_blocks(info):
    """The perturbation feature sets a closed-form model may read: the data's (expression-PCA
    loadings) and, where the host had the gene database, the GO embedding."""
    blocks = [np.asarray(info["pert_features"], dtype=np.float64)]
    if info.get("pert_features_go") is not None:
        blocks.append(np.asarray(info["pert_features_go"], dtype=np.float64))
    return blocks
