"""Cross-checks of score() against implementations that share no code with it.

1. cell-eval (Arc Institute, PyPI ``cell-eval``, a test-only dependency): its Pearson delta and
   its discrimination score on cell-level AnnData pairs.
2. A plain per-perturbation recomputation with scipy.stats / numpy loops.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import stats

from harmonycell.tools.evaluation.metrics import pool_target_genes, score
from harmonycell.tools.evaluation.pseudobulk import targets_for
from metrics_data import make_canonical


@pytest.fixture(scope="module")
def case():
    ad = make_canonical(n_perts=80, n_genes=90, contexts=("K562",), seed=21)
    t = targets_for(ad, "test")
    rng = np.random.default_rng(1)
    # an imperfect model: part truth, part noise, part the shared shift
    pred = 0.4 * t.y + 0.4 * t.pert_mean_train + 0.2 * t.y_ctrl + rng.normal(0, 0.3, t.y.shape)
    return ad, t, pred, score(t, pred)


def _cell_level_pair(ad, t, pred):
    """Real: the split's perturbed cells and every control cell (the reference); pred: the same
    control cells plus each query's prediction as cells (so both pseudo-bulks are exactly what
    score() compares)."""
    test = ad[((ad.obs["split"] == "test") | ad.obs["is_control"]).to_numpy()]
    symbols = list(ad.var["gene_symbol"].astype(str))
    lab = test.obs["condition_name"].astype(str).to_numpy()
    real = AnnData(np.asarray(test.X, dtype=np.float64),
                   obs=pd.DataFrame({"p": lab}, index=[f"r{i}" for i in range(len(lab))]))
    real.var_names = symbols
    ctrl = np.asarray(test.X[test.obs["is_control"].to_numpy()], dtype=np.float64)
    Xp = np.vstack([ctrl, np.repeat(pred, 3, axis=0)])
    labp = ["control"] * len(ctrl) + [q.condition for q in t.queries for _ in range(3)]
    fake = AnnData(Xp, obs=pd.DataFrame({"p": labp}, index=[f"f{i}" for i in range(len(labp))]))
    fake.var_names = symbols
    return real, fake


def test_pearson_delta_and_discrimination_match_cell_eval(case):
    cell_eval = pytest.importorskip("cell_eval", reason="test-only dependency cell-eval")
    from cell_eval._types import PerturbationAnndataPair
    from cell_eval.metrics import discrimination_score, pearson_delta

    ad, t, pred, rep = case
    real, fake = _cell_level_pair(ad, t, pred)
    pair = PerturbationAnndataPair(real=real, pred=fake, pert_col="p", control_pert="control")
    theirs = pearson_delta(pair)
    ours = {r.condition: r.metrics["DeltaPCC"] for r in rep.per_perturbation}
    assert set(theirs) == set(ours)
    for k in ours:
        assert ours[k] == pytest.approx(theirs[k], abs=1e-6)
    # cell-eval: 1 - (#perturbations closer than the true one) / N. Ours leaves out the perturbed
    # genes of every query (cell-eval only each query's own), so compare on those genes gone.
    keep = np.setdiff1d(np.arange(len(t.genes)), pool_target_genes(t, np.arange(len(t.queries))))
    pair = PerturbationAnndataPair(real=real[:, keep].copy(), pred=fake[:, keep].copy(), pert_col="p",
                                   control_pert="control")
    disc = discrimination_score(pair, metric="euclidean", exclude_target_gene=False)
    n = len(t.queries)
    for r in rep.per_perturbation:
        closer_theirs = round(n * (1 - disc[r.condition]))
        assert r.metrics["Discrimination_score"] == pytest.approx(1 - closer_theirs / (n - 1))
    assert cell_eval is not None


def test_matches_plain_recomputation(case):
    ad, t, pred, rep = case
    X, obs = np.asarray(ad.X, dtype=np.float64), ad.obs
    test = (obs["split"] == "test").to_numpy()
    ctrl = X[obs["is_control"].to_numpy()].mean(0)  # all controls of the (single) context
    train_pert = X[(obs["split"] == "train").to_numpy() & ~obs["is_control"].to_numpy()].mean(0)
    rows = []
    for i, q in enumerate(t.queries):
        y = X[test & (obs["condition_name"] == q.condition).to_numpy()].mean(0)
        d, dh = y - ctrl, pred[i] - ctrl
        rows.append({
            "RMSE": np.sqrt(np.mean((y - pred[i]) ** 2)),
            "DeltaPCC": stats.pearsonr(d, dh)[0],
            "Cosine_delta": d @ dh / np.linalg.norm(d) / np.linalg.norm(dh),
            "PCC_Delta_shift_corrected": stats.pearsonr(y - train_pert, pred[i] - train_pert)[0],
        })
        for k, v in rows[-1].items():
            assert rep.per_perturbation[i].metrics[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
    for k in rows[0]:
        assert rep.aggregate[k] == pytest.approx(np.mean([r[k] for r in rows]), rel=1e-6)
    # rank by RMSE, plain double loop
    n = len(t.queries)
    ys = t.y
    ranks = []
    for p in range(n):
        dist = [np.sqrt(np.mean((pred[p] - ys[q]) ** 2)) for q in range(n)]
        ranks.append(sum(dist[q] < dist[p] for q in range(n) if q != p) / (n - 1))
    assert rep.aggregate["Mean_rank_rmse"] == pytest.approx(np.mean(ranks))
    delta = ys - t.y_ctrl
    md = np.sqrt(((pred - t.y_ctrl - delta) ** 2).sum()) / np.sqrt((delta ** 2).sum())
    assert rep.aggregate["Matrix_Distance"] == pytest.approx(md)
