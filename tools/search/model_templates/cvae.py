# --- backbone: generative/cvae ---
def mlp(sizes, dropout):
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.GELU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


class CVAEModel(nn.Module):
    """Conditional VAE. Condition c = [encoding of x_ctrl, perturbation embedding]; encoder
    q(z | x_target, c); decoder p(x | z, c) = x_ctrl + delta(z, c). Trained on the ELBO; the mean
    prediction averages the decoder over draws from the prior."""

    def __init__(self, info):
        super().__init__()
        n_genes = info["n_genes"]
        width, depth, emb, dropout = trunk_hparams(info)
        self.latent = int(hp(info, "latent_dim", 32))
        self.beta = float(hp(info, "beta", 0.05))
        self.n_samples = int(hp(info, "n_samples", 8))
        self.loss_kind = hp(info, "loss", "mse")
        self.pert = PertEncoder(info, emb)
        self.cond = nn.Linear(n_genes + emb, width)
        hidden = [width] * depth
        self.encoder = mlp([n_genes + width, *hidden, 2 * self.latent], dropout)
        self.decoder = mlp([self.latent + width, *hidden, n_genes], dropout)
        zero_init(self.decoder[-1])

    def condition(self, x_ctrl, pert):
        return F.gelu(self.cond(torch.cat([x_ctrl, self.pert(pert)], dim=-1)))

    def decode(self, z, c, x_ctrl):
        return x_ctrl + self.decoder(torch.cat([z, c], dim=-1))

    def forward(self, x_ctrl, pert):
        c = self.condition(x_ctrl, pert)
        z = torch.randn(x_ctrl.shape[0], self.latent, device=x_ctrl.device)
        return self.decode(z, c, x_ctrl)

    def loss(self, x_ctrl, pert, x_target):
        c = self.condition(x_ctrl, pert)
        mu, logvar = self.encoder(torch.cat([x_target, c], dim=-1)).chunk(2, dim=-1)
        logvar = logvar.clamp(-10.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = recon_loss(self.loss_kind, self.decode(z, c, x_ctrl), x_target)
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1))
        return recon + self.beta * kl / x_target.shape[1]

    @torch.no_grad()
    def predict(self, x_ctrl, pert):
        c = self.condition(x_ctrl, pert)
        total = torch.zeros_like(x_ctrl)
        for _ in range(self.n_samples):
            z = torch.randn(x_ctrl.shape[0], self.latent, device=x_ctrl.device)
            total += self.decode(z, c, x_ctrl)
        return total / self.n_samples


def build_model(info):
    return CVAEModel(info)
