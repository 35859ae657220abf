# mistake: nn.Module.__init__ is never called before sub-modules are assigned
import torch
import torch.nn as nn


class ShiftModel(nn.Module):
    def __init__(self, info):
        g, h = info["n_genes"], 64
        self.pert = nn.Linear(info["n_perts"], h)
        self.net = nn.Sequential(nn.Linear(g + h, h), nn.ReLU(), nn.Linear(h, g))

    def forward(self, x_ctrl, pert):
        z = self.pert(pert["mask"] * pert["dose"])
        return x_ctrl + self.net(torch.cat([x_ctrl, z], dim=-1))


def build_model(info):
    return ShiftModel(info)
