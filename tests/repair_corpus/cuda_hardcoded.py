# mistake: written on a GPU box: a noise tensor is created with device="cuda"
import torch
import torch.nn as nn


class ShiftModel(nn.Module):
    def __init__(self, info):
        super().__init__()
        g, h = info["n_genes"], 64
        self.pert = nn.Linear(info["n_perts"], h)
        self.net = nn.Sequential(nn.Linear(g + h, h), nn.ReLU(), nn.Linear(h, g))

    def forward(self, x_ctrl, pert):
        z = self.pert(pert["mask"] * pert["dose"])
        if self.training:
            z = z + 0.01 * torch.randn(z.shape, device="cuda")
        return x_ctrl + self.net(torch.cat([x_ctrl, z], dim=-1))


def build_model(info):
    return ShiftModel(info)
