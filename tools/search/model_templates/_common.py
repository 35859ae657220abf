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
