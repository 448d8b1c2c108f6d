"""The model suite: every model x the main knobs builds, runs forward + backward, right shapes."""
import itertools

import pytest
import torch

from fastmtl.config import Config, ConfigError
from fastmtl.models import MODEL_NAMES, DistillModel, build_model
from fastmtl.layers import SelfAttention, aspp_rates

DESC = {"semseg": 5, "depth": 1}
SIZE = (64, 96)


def _check_outputs(model, out, n=2):
    assert set(out) == set(DESC)
    for task, channels in DESC.items():
        preds = out[task] if isinstance(out[task], list) else [out[task]]
        if isinstance(model, DistillModel):
            assert len(preds) == 2, "distillation returns [initial, final]"
        for p in preds:
            assert p.shape == (n, channels, *SIZE)
            assert torch.isfinite(p).all()


@pytest.mark.parametrize("model_name,aspp,skip,se", [
    (m, a, s, e) for m, (a, s, e) in itertools.product(MODEL_NAMES, [(True, True, True), (False, False, False), (True, False, True)])
    if not (m == "distill_allconnect" and not s)
])
def test_every_model_forward_backward(model_name, aspp, skip, se):
    cfg = Config(model=model_name, encoder="resnet18", dilation=(False, True, True), aspp=aspp, skip=skip, se=se)
    model = build_model(cfg.validate(), DESC)
    x = torch.randn(2, 3, *SIZE)
    out = model(x)
    _check_outputs(model, out)
    loss = sum((p if isinstance(p, torch.Tensor) else sum(p)).square().mean() for p in out.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter takes part in the forward pass"
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("encoder", ["resnet34", "resnet50"])
def test_bigger_encoders_run(encoder):
    model = build_model(Config(model="distill_allconnect", encoder=encoder, dilation=(False, True, True)), DESC).eval()
    with torch.no_grad():
        _check_outputs(model, model(torch.randn(2, 3, *SIZE)))


@pytest.mark.parametrize("dilation,stride", [((False, False, False), 32), ((False, False, True), 16), ((False, True, True), 8)])
@pytest.mark.parametrize("encoder", ["resnet18", "resnet50"])
def test_output_stride_per_dilation(encoder, dilation, stride):
    from fastmtl.models import Encoder

    enc = Encoder(encoder, dilation).eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 64, 64))
    assert enc.output_stride == stride == max(feats)
    assert feats[stride].shape[-2:] == (64 // stride, 64 // stride)
    assert feats[2].shape[-2:] == (32, 32) and feats[4].shape[-2:] == (16, 16)
    assert {k: v.shape[1] for k, v in feats.items()} == enc.feature_channels


def test_aspp_rates_scale_with_output_stride():
    assert aspp_rates(16) == (6, 12, 18)
    assert aspp_rates(8) == (12, 24, 36)
    model = build_model(Config(model="joint", encoder="resnet18", dilation=(False, True, True)), DESC)
    assert model.aspp.rates == (12, 24, 36)
    assert [c[0].dilation[0] for c in model.aspp.convs] == [1, 12, 24, 36]


def test_input_size_not_a_multiple_gives_clear_error():
    model = build_model(Config(model="joint", encoder="resnet18", dilation=(False, False, True)), DESC)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.randn(1, 3, 40, 64))


def test_attention_init_options():
    zero = SelfAttention(8, 8, "zero")
    default = SelfAttention(8, 8, "default")
    assert zero.attention.weight.abs().sum() == 0
    assert default.attention.weight.abs().sum() > 0
    x = torch.randn(1, 8, 5, 5)
    torch.testing.assert_close(zero(x), zero.conv(x) * 0.5)
    # zero init does not freeze the attention weights: they get gradients and train
    zero(x).sum().backward()
    assert zero.attention.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="zero"):
        SelfAttention(8, 8, "ones")


def test_joint_head_is_split_per_task():
    model = build_model(Config(model="joint", encoder="resnet18"), {"semseg": 3, "depth": 1, "normals": 3})
    assert model.decoder.features_to_predictions.out_channels == 7
    out = model.eval()(torch.randn(1, 3, 32, 32))
    assert {k: v.shape[1] for k, v in out.items()} == {"semseg": 3, "depth": 1, "normals": 3}


def test_distill_with_three_tasks():
    model = build_model(Config(model="distill", encoder="resnet18"), {"a": 2, "b": 1, "c": 3}).eval()
    out = model(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in out["c"]] == [3, 3]


@pytest.mark.parametrize("bad,match", [
    (dict(model="unet"), "joint, branched"),
    (dict(encoder="vgg"), "resnet18, resnet34"),
    (dict(lr=-1.0), "--lr"),
    (dict(size=(100, 256)), "multiples of 8"),
    (dict(model="distill_allconnect", skip=False), "--no-skip"),
    (dict(attention_init="ones"), "zero, default"),
    (dict(batch_size=1), "at least 2 images"),
])
def test_config_errors_list_valid_choices(bad, match):
    with pytest.raises(ConfigError, match=match):
        Config(**bad).validate()


def test_config_json_round_trip():
    cfg = Config(model="branched", dilation=(False, False, True), size=(64, 128), lr=3e-4)
    assert Config.from_json(cfg.to_json()) == cfg


def test_config_choices_are_the_registries():
    import re

    from fastmtl.models import ENCODERS

    with pytest.raises(ConfigError, match=re.escape(", ".join(MODEL_NAMES))):
        Config(model="unet").validate()
    with pytest.raises(ConfigError, match=re.escape(", ".join(ENCODERS))):
        Config(encoder="vgg").validate()
