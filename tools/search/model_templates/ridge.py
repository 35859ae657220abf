# --- backbone: simple/ridge ---
class RidgeModel(nn.Module):
    """delta(p) = b + (w_p F) A: ridge regression from a perturbation's features (F: the data's
    expression-PCA loadings beside the GO embedding where there is one; additive over the
    perturbations of a combination) to its training pseudo-bulk effect, in closed form.

    The ridge penalty is chosen on the inner split of training perturbations (never validation or
    test units) from a grid around ``alpha``, then the model is refitted on every training
    perturbation. A perturbation with no feature (a drug, a gene the data do not measure) gets
    the mean training effect b."""

    GRID = (0.01, 0.1, 1.0, 10.0, 100.0)

    def __init__(self, info):
        super().__init__()
        # each feature set standardised on its own, then side by side: a gene the database does
        # not know keeps a zero GO block and is predicted from its data features
        F = np.concatenate([standardised(b) for b in feature_blocks(info)], axis=1)
        self.register_buffer("feats", torch.as_tensor(F, dtype=torch.float32))
        self.register_buffer("coef", torch.zeros(F.shape[1], info["n_genes"]))
        self.register_buffer("bias", torch.zeros(info["n_genes"]))
        self.alpha = float(hp(info, "alpha", 1.0))
        self.chosen_alpha = None

    @staticmethod
    def _solve(Phi, D, alpha):
        b = D.mean(0)
        k = Phi.shape[1]
        # the penalty is relative to the features' scale, so one grid fits every feature set
        lam = alpha * max(np.trace(Phi.T @ Phi) / max(k, 1), 1e-12)
        A = np.linalg.solve(Phi.T @ Phi + lam * np.eye(k), Phi.T @ (D - b))
        return A, b

    def fit(self, data):
        W, D, held = training_effects(data)
        Phi = W @ self.feats.double().numpy()
        alphas = sorted({self.alpha * g for g in self.GRID})
        best = self.alpha
        if held.any() and (~held).sum() >= 2:
            errs = []
            for a in alphas:
                A, b = self._solve(Phi[~held], D[~held], a)
                errs.append(float(((Phi[held] @ A + b - D[held]) ** 2).mean()))
            best = alphas[int(np.argmin(errs))]
        A, b = self._solve(Phi, D, best)
        self.chosen_alpha = best
        self.coef.copy_(torch.as_tensor(A, dtype=torch.float32))
        self.bias.copy_(torch.as_tensor(b, dtype=torch.float32))

    def forward(self, x_ctrl, pert):
        w = pert["mask"].float() * pert["dose"].float()
        return x_ctrl + self.bias + (w @ self.feats) @ self.coef


def build_model(info):
    return RidgeModel(info)
