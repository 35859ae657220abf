# mistake: F.gelu is used but torch.nn.functional is never imported
import torch
import torch.nn as nn


class ShiftModel(nn.Module):
    def __init__(self, info):
        super().__init__()
        g, h = info["n_genes"], 64
        self.pert = nn.Linear(info["n_perts"], h)
        self.fc1 = nn.Linear(g + h, h)
        self.fc2 = nn.Linear(h, g)

    def forward(self, x_ctrl, pert):
        z = self.pert(pert["mask"] * pert["dose"])
        return x_ctrl + self.fc2(F.gelu(self.fc1(torch.cat([x_ctrl, z], dim=-1))))


def build_model(info):
    return ShiftModel(info)
