# mistake: the module defines the model class with named sizes but no build_model at all
import torch
import torch.nn as nn


class ShiftModel(nn.Module):
    def __init__(self, n_genes, n_perts, width=64):
        super().__init__()
        self.pert = nn.Linear(n_perts, width)
        self.net = nn.Sequential(nn.Linear(n_genes + width, width), nn.ReLU(), nn.Linear(width, n_genes))

    def forward(self, x_ctrl, pert):
        z = self.pert(pert["mask"] * pert["dose"])
        return x_ctrl + self.net(torch.cat([x_ctrl, z], dim=-1))
