# --- backbone: discriminative/resnet ---
class ResNetModel(nn.Module):
    """x_pred = x_ctrl + head(ResBlocks(W [x_ctrl, z_pert]))."""

    def __init__(self, info):
        super().__init__()
        n_genes = info["n_genes"]
        width, depth, emb, dropout = trunk_hparams(info)
        self.pert = PertEncoder(info, emb)
        self.inp = nn.Linear(n_genes + emb, width)
        self.blocks = nn.ModuleList([ResBlock(width, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = zero_init(nn.Linear(width, n_genes))

    def forward(self, x_ctrl, pert):
        z = self.pert(pert)
        h = self.inp(torch.cat([x_ctrl, z], dim=-1))
        for block in self.blocks:
            h = block(h)
        return x_ctrl + self.head(self.norm(h))


def build_model(info):
    return ResNetModel(info)
