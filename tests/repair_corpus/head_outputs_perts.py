# mistake: the output head produces one value per perturbation instead of one per gene
import torch
import torch.nn as nn


class ShiftModel(nn.Module):
    def __init__(self, info):
        super().__init__()
        g, p, h = info["n_genes"], info["n_perts"], 64
        self.pert = nn.Linear(p, h)
        self.body = nn.Sequential(nn.Linear(g + h, h), nn.ReLU())
        self.head = nn.Linear(h, p)

    def forward(self, x_ctrl, pert):
        z = self.pert(pert["mask"] * pert["dose"])
        return x_ctrl + self.head(self.body(torch.cat([x_ctrl, z], dim=-1)))


def build_model(info):
    return ShiftModel(info)
