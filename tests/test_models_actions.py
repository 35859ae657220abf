import pytest

from harmonycell.tools.search.actions import (
    BACKBONES, PARADIGMS, all_backbone_paths, describe, expansions, parse_action,
)
from harmonycell.tools.errors import InputError


def test_every_backbone_path_parses_and_round_trips():
    assert set(all_backbone_paths()) == {
        "simple/ridge", "simple/nearest-gene", "simple/nearest-context", "discriminative/resnet", "discriminative/gated-mlp", "discriminative/pathway-masked",
        "discriminative/attribute-decoder", "discriminative/set-transformer", "generative/cvae", "generative/flow-matching"}
    for text in all_backbone_paths():
        assert parse_action(text).text() == text


def test_refinements_resolve_into_config_and_hparams():
    p = parse_action("discriminative/resnet/hparams:lr=3e-4,dropout=0.1/loss:huber")
    assert p.text() == "discriminative/resnet/hparams:dropout=0.1,lr=0.0003/loss:huber"
    cfg = p.training_config(seed=5)
    assert cfg["lr"] == pytest.approx(3e-4) and cfg["loss"] == "huber" and cfg["seed"] == 5
    assert cfg["hparams"]["dropout"] == pytest.approx(0.1) and cfg["hparams"]["loss"] == "huber"
    # a later refinement overrides an earlier one; defaults fill the rest
    q = parse_action("generative/cvae/hparams:latent_dim=8/hparams:latent_dim=16,width=64")
    assert q.training_config()["hparams"]["latent_dim"] == 16
    assert q.training_config()["hparams"]["width"] == 64
    assert q.training_config()["epochs"] == BACKBONES["cvae"].params["epochs"].default


def test_unknown_paradigm_lists_paradigms():
    with pytest.raises(InputError) as e:
        parse_action("bayesian/resnet")
    assert all(p in str(e.value) for p in PARADIGMS)


def test_backbone_of_other_paradigm_lists_valid_backbones():
    with pytest.raises(InputError) as e:
        parse_action("discriminative/cvae")
    msg = str(e.value)
    assert "belongs to paradigm 'generative'" in msg
    assert "resnet" in msg and "gated-mlp" in msg and "pathway-masked" in msg


def test_unknown_backbone_lists_choices():
    with pytest.raises(InputError) as e:
        parse_action("generative/diffusion")
    assert "cvae" in str(e.value) and "flow-matching" in str(e.value)


@pytest.mark.parametrize("path", [
    "discriminative/resnet/gated-mlp",
    "discriminative/resnet/hparams:lr=1e-3/generative",
    "generative/cvae/loss:huber/flow-matching",
])
def test_reverting_a_decision_is_invalid(path):
    with pytest.raises(InputError) as e:
        parse_action(path)
    assert "revert" in str(e.value) and "hparams:" in str(e.value)


@pytest.mark.parametrize("path,needle", [
    ("discriminative/resnet/hparams:lr=5", "[1e-05, 0.1]"),
    ("discriminative/resnet/hparams:depth=2.5", "whole number"),
    ("discriminative/resnet/hparams:lr=fast", "not a number"),
    ("discriminative/resnet/hparams:latent_dim=8", "valid: hparams"),
    ("discriminative/resnet/loss:l1", "mse, huber"),
    ("discriminative/resnet/optimizer:sgd", "loss:mse|huber"),
])
def test_invalid_refinement_lists_valid_choices(path, needle):
    with pytest.raises(InputError) as e:
        parse_action(path)
    assert needle in str(e.value)


def test_expansions_walk_the_hierarchy_and_all_parse():
    assert expansions(None) == list(PARADIGMS)
    assert expansions(parse_action("generative")) == ["generative/cvae", "generative/flow-matching"]
    kids = expansions(parse_action("discriminative/gated-mlp"))
    assert kids and all(k.startswith("discriminative/gated-mlp/") for k in kids)
    for k in kids:
        child = parse_action(k)
        assert child.backbone == "gated-mlp" and len(child.refinements) == 1
    assert "discriminative/gated-mlp/loss:huber" in kids


@pytest.mark.parametrize("backbone,own", [
    ("generative/cvae", ("latent_dim", "beta", "n_samples", "width", "emb_dim")),
    ("generative/flow-matching", ("ode_steps", "sigma", "n_samples", "width")),
    ("discriminative/pathway-masked", ("n_modules", "units_per_module", "emb_dim", "depth")),
    ("discriminative/resnet", ("lr", "weight_decay", "dropout", "width", "depth", "emb_dim", "batch_size")),
])
def test_refinements_cover_each_backbones_own_parameters_and_the_other_loss(backbone, own):
    kids = expansions(parse_action(backbone))
    params = {k.rsplit("hparams:", 1)[1].split("=")[0] for k in kids if "hparams:" in k}
    assert set(own) <= params
    assert f"{backbone}/loss:huber" in kids


def test_a_parameter_the_template_ignores_is_neither_offered_nor_accepted():
    # pathway-masked's hidden size is n_modules x units_per_module: its template never reads width
    from harmonycell.tools.search.codegen import template_text
    assert '"width"' not in template_text("pathway_masked")
    kids = expansions(parse_action("discriminative/pathway-masked"))
    assert not any("width=" in k for k in kids)
    with pytest.raises(InputError) as e:
        parse_action("discriminative/pathway-masked/hparams:width=64")
    assert "unknown hyperparameter 'width'" in str(e.value)


def test_every_offered_parameter_is_read_by_its_template_or_the_harness():
    from harmonycell.sandbox import harness
    from harmonycell.tools.search.codegen import template_text
    common = template_text("_common")
    for b in BACKBONES.values():
        text = template_text(b.template) + common
        for k in expansions(parse_action(f"{b.paradigm}/{b.name}")):
            seg = k.rsplit("/", 1)[1]
            if seg.startswith("loss:"):
                assert seg[5:] in text and seg[5:] in open(harness.__file__).read()
                continue
            if seg.startswith("on:"):  # a simple backbone: its template is rendered under the network
                assert BACKBONES[seg[3:]].closed_form and b.on_simple
                continue
            name = seg.split(":")[1].split("=")[0]
            p = b.params[name]
            where = open(harness.__file__).read() if p.target == "config" else text
            assert f'"{name}"' in where, (b.name, name)


def test_describe_is_json_ready():
    import json
    d = json.loads(json.dumps(describe()))
    assert set(d["backbones"]) == set(all_backbone_paths())
