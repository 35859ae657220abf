# mistake: reshapes the hidden state to a hard-coded (batch, 8, 16) grid that does not fit width 64
import torch
import torch.nn as nn


class ShiftModel(nn.Module):
    def __init__(self, info):
        super().__init__()
        g, h = info["n_genes"], 64
        self.pert = nn.Linear(info["n_perts"], h)
        self.inp = nn.Linear(g + h, h)
        self.out = nn.Linear(h, g)

    def forward(self, x_ctrl, pert):
        z = self.pert(pert["mask"] * pert["dose"])
        hid = torch.relu(self.inp(torch.cat([x_ctrl, z], dim=-1)))
        grid = hid.view(-1, 8, 16)
        return x_ctrl + self.out(grid.flatten(1))


def build_model(info):
    return ShiftModel(info)
