"""Residual MLP: x_pred = x_ctrl + delta(x_ctrl, perturbation embedding).

The perturbation embedding is a learnable per-perturbation vector plus a projection of
data-derived perturbation features, so perturbations unseen in training still get an embedding.
"""

import torch
from torch import nn

HIDDEN = 256
EMBED = 64


class ResidualMLP(nn.Module):
    def __init__(self, info):
        super().__init__()
        feats = info["pert_features"]
        self.register_buffer("features", feats)
        self.pert_embed = nn.Parameter(torch.zeros(info["n_perts"], EMBED))
        self.feat_proj = nn.Linear(feats.shape[1], EMBED)
        self.encode = nn.Sequential(nn.Linear(info["n_genes"], HIDDEN), nn.GELU())
        self.delta = nn.Sequential(
            nn.Linear(HIDDEN + EMBED, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, info["n_genes"])
        )

    def forward(self, x_ctrl, pert):
        weights = pert["mask"] * pert["dose"]
        emb = weights @ (self.pert_embed + self.feat_proj(self.features))
        return x_ctrl + self.delta(torch.cat([self.encode(x_ctrl), emb], dim=1))


def build_model(info):
    return ResidualMLP(info)
