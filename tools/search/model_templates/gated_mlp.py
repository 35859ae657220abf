# --- backbone: discriminative/gated-mlp ---
class GatedBlock(nn.Module):
    """h + W2(gelu(W1 norm(h)) * sigmoid(Wg z)): the perturbation decides which hidden units
    (response programmes) open, rather than only shifting them."""

    def __init__(self, width, emb, dropout):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, 2 * width)
        self.gate = nn.Linear(emb, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, z):
        u = F.gelu(self.fc1(self.norm(h))) * torch.sigmoid(self.gate(z))
        return h + self.fc2(self.drop(u))


class GatedMLPModel(nn.Module):
    def __init__(self, info):
        super().__init__()
        n_genes = info["n_genes"]
        width, depth, emb, dropout = trunk_hparams(info)
        self.pert = PertEncoder(info, emb)
        self.inp = nn.Linear(n_genes, width)
        self.z_in = nn.Linear(emb, width)
        self.blocks = nn.ModuleList([GatedBlock(width, emb, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = zero_init(nn.Linear(width, n_genes))
        self.direct = zero_init(nn.Linear(emb, n_genes))  # state-independent part of the shift

    def forward(self, x_ctrl, pert):
        z = self.pert(pert)
        h = self.inp(x_ctrl) + self.z_in(z)
        for block in self.blocks:
            h = block(h, z)
        return x_ctrl + self.head(self.norm(h)) + self.direct(z)


def build_model(info):
    return GatedMLPModel(info)
