# --- backbone: discriminative/pathway-masked ---
def module_membership(info, n_genes):
    """(genes x modules) 0/1 membership. The Coder computes modules on the host (co-expression
    clusters of the training data, or a user's gene-set file) and passes them as
    hparams['gene_modules'] = list of gene-index lists; without them genes are chunked in order."""
    modules = hp(info, "gene_modules", None)
    if not modules:
        n_mod = max(1, min(int(hp(info, "n_modules", 40)), n_genes))
        modules = [list(c) for c in np.array_split(np.arange(n_genes), n_mod)]
    member = torch.zeros(n_genes, len(modules))
    for j, genes in enumerate(modules):
        member[torch.as_tensor(list(genes), dtype=torch.long), j] = 1.0
    return member


class MaskedLinear(nn.Module):
    """Linear layer whose weight is multiplied by a fixed 0/1 mask (in x out)."""

    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask.t().contiguous())  # out x in, like nn.Linear
        fan_in = mask.sum(0).clamp(min=1.0)  # per output unit
        w = torch.randn_like(self.mask) / fan_in.sqrt().unsqueeze(1)
        self.weight = nn.Parameter(w * self.mask)
        self.bias = nn.Parameter(torch.zeros(mask.shape[1]))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class PathwayMaskedModel(nn.Module):
    """genes -> module units (each sees only its module's genes) -> + perturbation effect on each
    module -> module crosstalk -> genes (each gene reads only its own modules)."""

    def __init__(self, info):
        super().__init__()
        n_genes = info["n_genes"]
        units, depth = int(hp(info, "units_per_module", 4)), int(hp(info, "depth", 2))
        emb, dropout = int(hp(info, "emb_dim", 64)), float(hp(info, "dropout", 0.1))
        member = module_membership(info, n_genes)
        unit_mask = member.repeat_interleave(units, dim=1)  # genes x (modules*units)
        n_units = unit_mask.shape[1]
        self.pert = PertEncoder(info, emb)
        self.enc = MaskedLinear(unit_mask)
        self.effect = nn.Linear(emb, n_units)
        self.mix = nn.ModuleList([nn.Linear(n_units, n_units) for _ in range(max(0, depth - 1))])
        self.drop = nn.Dropout(dropout)
        self.dec = MaskedLinear(unit_mask.t().contiguous())
        zero_init(self.dec)

    def forward(self, x_ctrl, pert):
        z = self.pert(pert)
        h = F.gelu(self.enc(x_ctrl) + self.effect(z))
        for layer in self.mix:
            h = h + F.gelu(layer(self.drop(h)))
        return x_ctrl + self.dec(self.drop(h))


def build_model(info):
    return PathwayMaskedModel(info)
