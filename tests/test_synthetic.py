import anndata as ad
import numpy as np

from harmonycell.tools.data.synthetic import load_truth


def lognorm(X):
    X = X.toarray() if hasattr(X, "toarray") else X
    return np.log1p(X / X.sum(1, keepdims=True) * 1e4)


def test_two_files_with_different_schemas(synthetic_dir):
    a = ad.read_h5ad(synthetic_dir / "labA_counts.h5ad")
    b = ad.read_h5ad(synthetic_dir / "labB_lognorm.h5ad")
    assert "guide_target" in a.obs and "condition" in b.obs
    assert set(a.obs.columns).isdisjoint({"condition"}) and set(b.obs.columns).isdisjoint({"guide_target"})
    xa = a.X.toarray()
    assert np.allclose(xa, np.round(xa)) and xa.max() > 50  # raw counts
    xb = b.X.toarray()
    assert not np.allclose(xb, np.round(xb)) and xb.max() < 15  # log-normalised
    assert "non-targeting" in set(a.obs["guide_target"].dropna())
    assert "ctrl" in set(b.obs["condition"]) and any(c.endswith("+ctrl") for c in b.obs["condition"])
    assert a.obs["guide_target"].isna().sum() > 0  # cells with no detected guide
    assert a.var_names[0].startswith("SG") and b.var_names[0].startswith("ENSG")
    assert list(b.var["gene_name"]) == list(a.var_names)


def test_ground_truth_effects_are_recoverable_from_files(synthetic_dir):
    truth = load_truth(synthetic_dir / "truth.npz")
    for path, col, ctrl, fmt, raw in [
        ("labA_counts.h5ad", "guide_target", "non-targeting", lambda c: c.replace("+", ";"), True),
        ("labB_lognorm.h5ad", "condition", "ctrl", lambda c: c if "+" in c else f"{c}+ctrl", False),
    ]:
        a = ad.read_h5ad(synthetic_dir / path)
        X = lognorm(a.X) if raw else a.X.toarray()
        lab = a.obs[col]
        base = X[(lab == ctrl).to_numpy()].mean(0)
        rs, wrong = [], []
        effects = truth["effects"]
        for i, name in enumerate(truth["conditions"]):
            sel = (lab == fmt(str(name))).to_numpy()
            if sel.sum():
                delta = X[sel].mean(0) - base
                rs.append(np.corrcoef(delta, effects[i])[0, 1])
                wrong.append(np.corrcoef(delta, effects[(i + 7) % len(effects)])[0, 1])
        assert len(rs) >= 20
        assert np.median(rs) > 0.8, f"{path}: median r {np.median(rs):.2f}"
        # pairing a condition with another condition's effect recovers far less
        assert np.median(np.abs(wrong)) < 0.4
