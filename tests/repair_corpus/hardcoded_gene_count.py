# mistake: the gene count of the author's own dataset is hard-coded (2000) instead of read from info
import torch
import torch.nn as nn

N_GENES = 2000


class ShiftModel(nn.Module):
    def __init__(self, info):
        super().__init__()
        h = 64
        self.pert = nn.Linear(info["n_perts"], h)
        self.net = nn.Sequential(nn.Linear(N_GENES + h, h), nn.ReLU(), nn.Linear(h, N_GENES))

    def forward(self, x_ctrl, pert):
        z = self.pert(pert["mask"] * pert["dose"])
        return x_ctrl + self.net(torch.cat([x_ctrl, z], dim=-1))


def build_model(info):
    return ShiftModel(info)
