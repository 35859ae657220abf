"""Every backbone trains through the sandbox (local backend) on a small synthetic canonical task
and predicts held-out perturbations from their data-derived features."""

import json
import types

import numpy as np
import pytest
import torch

from harmonycell.sandbox.local import LocalBackend
from harmonycell.sandbox.training import run_training
from harmonycell.tools.search import codegen
from harmonycell.tools.search.actions import all_backbone_paths, not_for, parse_action
from harmonycell.tools.errors import InputError
from harmonycell.tools.data.taskdata import export_sandbox_data, load_meta

from models_support import canonical_unseen_perturbation, pseudobulk_scores

FAST = "hparams:epochs=25,width=96,patience=5"
# what an unseen-perturbation task's search may try (nearest-context answers held-out contexts)
PERTURBATION_PATHS = [p for p in all_backbone_paths() if p.split("/")[1] not in not_for("unseen-perturbation")]


@pytest.fixture(autouse=True)
def one_sandbox_thread(monkeypatch):
    # on a 2-core host shared with other jobs, torch's default threads oversubscribe (10x slower)
    monkeypatch.setenv("HARMONYCELL_THREADS", "1")

@pytest.fixture(scope="module")
def task(tmp_path_factory):
    adata = canonical_unseen_perturbation()
    data = tmp_path_factory.mktemp("data")
    export_sandbox_data(adata, data)
    return adata, data


def toy_training(info, cells=20):
    """What the harness hands fit(): cells of perturbations 0-3 (4 is unseen), effects linear in
    their features, one context, training controls; perturbation 3 is the inner split."""
    rng = np.random.default_rng(0)
    F = info["pert_features"].numpy()
    A = rng.normal(size=(F.shape[1], info["n_genes"]))
    rows, X, mask = [], [], []
    for p in range(4):
        m = np.zeros(info["n_perts"], np.float32)
        m[p] = 1
        for _ in range(cells):
            mask.append(m)
            X.append(F[p] @ A + rng.normal(scale=0.1, size=info["n_genes"]))
            rows.append(p)
    mask = np.array(mask)
    return {"X": np.array(X, np.float32), "mask": mask, "dose": np.ones_like(mask),
            "context": np.zeros(len(X), int), "is_control": np.zeros(len(X), bool),
            "hold": np.array(rows) == 3, "ctrl_X": rng.normal(scale=0.1, size=(30, info["n_genes"])),
            "ctrl_context": np.zeros(30, int)}


def load_module(code: str):
    mod = types.ModuleType("rendered_model")
    exec(compile(code, "model.py", "exec"), mod.__dict__)  # test-only: templates are trusted here
    return mod


def toy_info(n_genes=12, n_perts=5):
    feats = torch.randn(n_perts, 11)
    return {"n_genes": n_genes, "n_perts": n_perts, "n_contexts": 1, "pert_features": feats}


def test_nearest_context_answers_a_held_out_context_like_the_contexts_it_resembles():
    """Three training contexts: two alike at rest (A, A') that respond one way to perturbation 0,
    one unlike them (B) that responds the opposite way. A held-out context whose controls look
    like A's is answered with A's response, one like B's with B's; never the pooled shift."""
    rng = np.random.default_rng(0)
    G, cells = 8, 30
    rest = {0: np.zeros(G), 1: np.zeros(G) + 0.1, 2: np.full(G, 3.0)}  # contexts 0 and 1 alike, 2 far
    up = np.linspace(1.0, 2.0, G)
    effect = {0: up, 1: up, 2: -up}
    X, ctx, ctrl_X, ctrl_ctx = [], [], [], []
    for c in (0, 1, 2):
        for _ in range(cells):
            X.append(rest[c] + effect[c] + rng.normal(scale=0.05, size=G))
            ctx.append(c)
            ctrl_X.append(rest[c] + rng.normal(scale=0.05, size=G))
            ctrl_ctx.append(c)
    mask = np.zeros((len(X), 2), np.float32)
    mask[:, 0] = 1
    data = {"X": np.array(X), "mask": mask, "dose": np.ones_like(mask), "context": np.array(ctx),
            "is_control": np.zeros(len(X), bool), "hold": np.array(ctx) == 1,  # the inner split: context 1
            "ctrl_X": np.array(ctrl_X), "ctrl_context": np.array(ctrl_ctx)}
    info = {"n_genes": G, "n_perts": 2, "n_contexts": 4, "pert_features": torch.zeros(2, 3),
            "hparams": parse_action("simple/nearest-context").training_config()["hparams"]}
    model = load_module(codegen.generate("simple/nearest-context").code).build_model(info)
    model.fit(data)
    # the inner split held out context 1: its nearest training context (0) answers it best, so k=1
    assert model.chosen_k == 1
    pert = {"mask": torch.tensor([[1.0, 0.0]] * 5), "dose": torch.ones(5, 2)}
    like_a = torch.as_tensor(np.zeros((5, G)) + 0.05, dtype=torch.float32)
    like_b = torch.as_tensor(np.full((5, G), 2.9), dtype=torch.float32)
    d_a = (model(like_a, pert) - like_a).mean(0).numpy()
    d_b = (model(like_b, pert) - like_b).mean(0).numpy()
    assert np.allclose(d_a, up, atol=0.1) and np.allclose(d_b, -up, atol=0.1)
    # a perturbation never measured gets the contexts' mean response, weighted the same way
    other = {"mask": torch.tensor([[0.0, 1.0]] * 5), "dose": torch.ones(5, 2)}
    assert np.allclose((model(like_b, other) - like_b).mean(0).numpy(), -up, atol=0.1)


@pytest.mark.parametrize("path", PERTURBATION_PATHS)
def test_contract_shapes_residual_start_and_unseen_perturbations(path):
    torch.manual_seed(0)
    action = parse_action(path)
    mc = codegen.generate(action) if action.backbone != "pathway-masked" else None
    code = mc.code if mc else codegen.render(action)
    info = toy_info()
    info["hparams"] = dict(action.training_config()["hparams"], width=32, n_modules=3)
    model = load_module(code).build_model(info)
    x = torch.rand(6, 12)
    pert = {"mask": torch.zeros(6, 5), "dose": torch.ones(6, 5)}
    pert["mask"][:, 2] = 1.0
    model.eval()
    predict = getattr(model, "predict", model.forward)
    out = predict(x, pert)
    assert out.shape == (6, 12) and torch.isfinite(out).all()
    if action.spec.closed_form:
        assert torch.allclose(out, x)  # unfitted: no effect yet
        assert not any(p.requires_grad for p in model.parameters())  # the harness skips training
        model.fit(toy_training(info))
        one = {"mask": torch.eye(5), "dose": torch.ones(5, 5)}
        effects = predict(torch.zeros(5, 12), one)
        # perturbation 4 was never trained on: its effect comes from its feature, not the shared
        # (mean) shift; the trained ones keep their own effects
        assert not torch.allclose(effects[4], effects[:4].mean(0), atol=1e-3)
        assert torch.linalg.matrix_rank(effects[:4]) >= 3
        return
    if action.paradigm == "discriminative" and action.spec.residual:
        # delta heads start at zero: an untrained model predicts the control cell (residual form)
        assert torch.allclose(out, x)
    # the learnable table starts at zero, so an unseen perturbation is carried by its feature:
    # two perturbations with different features get different embeddings
    z = model.pert({"mask": torch.eye(5)[:2], "dose": torch.ones(2, 5)})
    assert not torch.allclose(z[0], z[1])
    # the harness's early stopping calls loss() in eval mode
    if hasattr(model, "loss"):
        assert torch.isfinite(model.loss(x, pert, x + 0.5))
    # gradients flow end to end through loss() or forward()
    model.train()
    if hasattr(model, "loss"):
        loss = model.loss(x, pert, x + 0.5)
    else:
        loss = torch.nn.functional.mse_loss(model(x, pert), x + 0.5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("path", PERTURBATION_PATHS)
def test_backbone_trains_in_sandbox(task, tmp_path, path):
    adata, data = task
    # pathway-masked sizes itself by n_modules x units_per_module: width is not offered for it
    fast = FAST.replace(",width=96", "") if path.endswith("pathway-masked") else FAST
    closed_form = parse_action(path).spec.closed_form
    mc = codegen.generate(path if closed_form else f"{path}/{fast}", data)
    result = run_training(LocalBackend(), data, mc.code, mc.config, tmp_path / "node", timeout_s=300)
    assert result.ok, result.stderr_tail
    meta = load_meta(data)
    pred = np.load(tmp_path / "node" / "pred_test.npy")
    assert pred.shape == (len(meta["queries"]["test"]), len(meta["genes"]))
    summary = json.loads((tmp_path / "node" / "harness_result.json").read_text())
    if closed_form:  # fitted once, no epochs
        assert summary["fit"] == "closed form" and summary["epochs_run"] == 0
    else:
        log = [json.loads(line) for line in (tmp_path / "node" / "train_log.jsonl").read_text().splitlines()]
        assert log[-1]["stop_loss"] < log[0]["stop_loss"] * 1.5  # trained, not diverged
    # the harness reports its own peak memory (torch alone is over 100 MB resident)
    assert summary["peak_rss_mb"] > 100
    # held-out perturbations get distinct predictions (their features, not one shared shift)
    ctrl = adata.X[(adata.obs["split"] == "test").to_numpy() & adata.obs["is_control"].to_numpy()]
    deltas = pred - np.asarray(ctrl.mean(0)).ravel()
    corr = np.corrcoef(deltas)
    assert corr[np.triu_indices_from(corr, 1)].min() < 0.95
    scores = pseudobulk_scores(adata, "test", pred)
    # on this biology the shared shift is weak; effects of unseen genes are learnable from
    # co-expression, so every backbone must beat the train-mean shift on DeltaPCC
    assert scores["model_delta_pcc"] > scores["train_mean_delta_pcc"] + 0.1, scores


def test_pathway_modules_from_coexpression_and_gene_sets(task, tmp_path):
    adata, data = task
    mc = codegen.generate("discriminative/pathway-masked/hparams:n_modules=6", data)
    modules = mc.config["hparams"]["gene_modules"]
    n_genes = adata.n_vars
    assert sorted(g for m in modules for g in m) == list(range(n_genes))  # a partition
    assert 2 <= len(modules) <= 6
    # co-expression modules recover the simulated programs better than chance: genes of one
    # module are more correlated with each other than with genes of other modules
    X = np.asarray(adata.X.toarray())
    C = np.corrcoef(X[adata.obs["is_control"].to_numpy()].T)
    label = np.empty(n_genes, int)
    for j, m in enumerate(modules):
        label[m] = j
    same = label[:, None] == label[None, :]
    off = ~np.eye(n_genes, dtype=bool)
    assert np.nanmean(C[same & off]) > np.nanmean(C[~same]) + 0.05
    gmt = tmp_path / "sets.gmt"
    syms = list(adata.var["gene_symbol"])
    gmt.write_text(f"SETA\tdesc\t{syms[0]}\t{syms[1]}\t{syms[2]}\nSETB\t-\t{syms[5].lower()}\t{syms[6]}\tNOTAGENE\n")
    mc = codegen.generate("discriminative/pathway-masked", data, gene_sets=gmt, gene_symbols=syms)
    modules = mc.config["hparams"]["gene_modules"]
    assert modules[0] == [0, 1, 2] and modules[1] == [5, 6] and len(modules[2]) == n_genes - 5
    bad = tmp_path / "bad.gmt"
    bad.write_text("SETX\t-\tFOO\tBAR\n")
    with pytest.raises(InputError, match="no gene set"):
        codegen.generate("discriminative/pathway-masked", data, gene_sets=bad, gene_symbols=syms)
