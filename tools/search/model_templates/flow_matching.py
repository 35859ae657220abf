# --- backbone: generative/flow-matching ---
class VelocityField(nn.Module):
    """f(x_t, t | x_ctrl, z_pert): residual MLP over [x_t, x_ctrl, z, time features]."""

    def __init__(self, n_genes, emb, width, depth, dropout):
        super().__init__()
        self.n_freq = 8
        self.inp = nn.Linear(2 * n_genes + emb + 2 * self.n_freq, width)
        self.blocks = nn.ModuleList([ResBlock(width, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = zero_init(nn.Linear(width, n_genes))
        # a time- and state-independent term: the perturbation's mean shift, directly learnable
        self.direct = zero_init(nn.Linear(emb, n_genes))

    def time_features(self, t):
        freqs = torch.arange(1, self.n_freq + 1, device=t.device, dtype=t.dtype) * math.pi
        return torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)], dim=-1)

    def forward(self, x_t, t, x_ctrl, z):
        h = self.inp(torch.cat([x_t, x_ctrl, z, self.time_features(t)], dim=-1))
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h)) + self.direct(z)


class FlowMatchingModel(nn.Module):
    """Conditional flow matching on the paired (control -> perturbed) coupling: the path starts at
    the control cell (plus noise sigma) and ends at the perturbed cell; inference integrates the
    learned velocity with Euler steps from the control cell. The velocity is parameterised by its
    endpoint, x1_hat = x_ctrl + f(x_t, t, x_ctrl, z) (residual form)."""

    def __init__(self, info):
        super().__init__()
        n_genes = info["n_genes"]
        width, depth, emb, dropout = trunk_hparams(info)
        self.steps = int(hp(info, "ode_steps", 16))
        self.sigma = float(hp(info, "sigma", 0.1))
        self.n_samples = int(hp(info, "n_samples", 4))
        self.loss_kind = hp(info, "loss", "mse")
        self.pert = PertEncoder(info, emb)
        self.field = VelocityField(n_genes, emb, width, depth, dropout)

    def endpoint(self, x_t, t, x_ctrl, z):
        """The network predicts where the path ends (x-prediction); the velocity follows as
        (x1_hat - x_t) / (1 - t). Integrating this field cannot run away from the data: the last
        Euler step lands exactly on the predicted endpoint."""
        return x_ctrl + self.field(x_t, t, x_ctrl, z)

    def loss(self, x_ctrl, pert, x_target):
        z = self.pert(pert)
        x0 = x_ctrl + self.sigma * torch.randn_like(x_ctrl)
        t = torch.rand(x_ctrl.shape[0], 1, device=x_ctrl.device)
        x_t = (1 - t) * x0 + t * x_target
        return recon_loss(self.loss_kind, self.endpoint(x_t, t, x_ctrl, z), x_target)

    def sample(self, x_ctrl, pert):
        z = self.pert(pert)
        x = x_ctrl + self.sigma * torch.randn_like(x_ctrl)
        dt = 1.0 / self.steps
        for i in range(self.steps):
            t = torch.full((x.shape[0], 1), i * dt, device=x.device)
            x = x + dt * (self.endpoint(x, t, x_ctrl, z) - x) / (1.0 - t)
        return x

    def forward(self, x_ctrl, pert):
        return self.sample(x_ctrl, pert)

    @torch.no_grad()
    def predict(self, x_ctrl, pert):
        total = torch.zeros_like(x_ctrl)
        for _ in range(self.n_samples):
            total += self.sample(x_ctrl, pert)
        return total / self.n_samples


def build_model(info):
    return FlowMatchingModel(info)
