# --- refinement: on:SIMPLE (a network learning the residual on top of a closed-form model) ---
class ResidualOnSimple(nn.Module):
    """prediction = simple(x_ctrl, p) + (network(x_ctrl, p) - x_ctrl).

    The simple model is fitted first in closed form on the training cells (the harness calls
    ``fit``) and then frozen (buffers only, no gradient); the network's delta head starts at
    zero, so before any gradient step the prediction is exactly the simple model's, and training
    only has to learn what the simple model misses."""

    def __init__(self, info):
        super().__init__()
        self.simple = build_simple_model(info)
        self.network = build_network(info)

    def fit(self, data):
        self.simple.fit(data)

    def forward(self, x_ctrl, pert):
        with torch.no_grad():
            base = self.simple(x_ctrl, pert)
        return base + self.network(x_ctrl, pert) - x_ctrl


def build_model(info):
    return ResidualOnSimple(info)
