"""``--encoder tu-<timm name>`` with the real timm: feature pyramids, the refused ResNet knobs,
fused == eager, ``--pretrained`` files and a tiny train -> eval -> ONNX export."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import timm_shim
from fastmtl.cli import main
from fastmtl.data.synthetic import generate_dataset
from fastmtl.errors import ConfigError
from fastmtl.evaluate import evaluate_checkpoint
from fastmtl.models import build_model
from fastmtl.models.timm_encoder import TimmEncoder
from fastmtl.train import train
from tiny_runs import assert_onnx_export_matches, one_thread, tiny_config  # noqa: F401 (autouse fixture)

timm_shim.install()  # test-only: torchvision's C extension does not load with CI's CPU torch
timm = pytest.importorskip("timm", reason="timm is the optional extra fastmtl[timm] (the dev extra installs it)")

NAMES = ("efficientnet_b0", "regnety_002", "mobilenetv3_small_100", "convnext_atto")
DIL = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
TASKS = {"semseg": 3, "depth": 1}


def timm_model(name, **fields):
    torch.manual_seed(0)
    knobs = dict(model="branched", encoder="tu-" + name, dilation=DIL[16], se=False)
    knobs.update(fields)
    return build_model(knobs, TASKS, fused=knobs.pop("fused", False))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("stride", [32, 8])
def test_feature_pyramid(name, stride):
    enc = TimmEncoder("tu-" + name, stride).eval()
    info = enc.model.feature_info
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = enc(x)
    assert enc.output_stride == stride and features[1] is x
    assert set(features) == {1, *info.reduction()}
    last_at_scale = dict(zip(info.reduction(), info.channels()))  # a later stage at the same scale wins
    assert enc.feature_channels == {1: 3, **last_at_scale}
    for scale, f in features.items():
        assert tuple(f.shape) == (1, enc.feature_channels[scale], 64 // scale, 64 // scale)


@pytest.mark.parametrize("model", ["joint", "distill"])
def test_models_predict_at_input_size(model):
    m = timm_model("mobilenetv3_small_100", model=model).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 32, 32))
    for t, n in TASKS.items():
        pred = out[t][-1] if isinstance(out[t], list) else out[t]
        assert tuple(pred.shape) == (2, n, 32, 32)


@pytest.mark.parametrize("fields, flag", [
    (dict(se=True), "--se"),
    (dict(dilation_style="torchvision"), "--dilation-style"),
    (dict(dilation=[True, False, False]), "--dilation"),
    (dict(model="mtan"), "--model mtan"),
    (dict(model="cross_stitch"), "--model cross_stitch"),
    (dict(encoder="tu-"), "--encoder"),
    (dict(encoder="resnet35"), "--encoder"),
])
def test_knobs_that_cannot_apply_are_refused(fields, flag):
    knobs = dict(model="branched", encoder="tu-mobilenetv3_small_100", dilation=DIL[16], se=False)
    knobs.update(fields)
    with pytest.raises(ConfigError, match=flag):
        build_model(knobs, TASKS)


def test_unknown_timm_model_and_unsupported_output_stride():
    with pytest.raises(ValueError, match="--encoder tu-no_such_net: timm .* has no model"):
        TimmEncoder("tu-no_such_net")
    with pytest.raises(ValueError, match="--dilation: timm model ghostnet_100 cannot run at output stride 16"):
        TimmEncoder("tu-ghostnet_100", 16)


def test_builtin_resnets_keep_their_knobs():
    m = build_model(dict(model="branched", encoder="resnet18", dilation=[True, True, False], se=True,
                         dilation_style="torchvision"), TASKS)
    assert m.encoder.output_stride == 8 and m.encoder.se


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv3_small_100", "efficientnet_b0"])
def test_fused_equals_eager_outputs_and_gradients(name):
    eager = timm_model(name).eval()
    fused = timm_model(name, fused=True).eval()
    fused.load_state_dict(eager.state_dict())
    assert any(type(m).__name__ == "FusedSEBlock" for m in fused.encoder.modules())  # timm's SE blocks
    x = torch.randn(2, 3, 32, 32)
    a, b = eager(x), fused(x)
    for t in TASKS:
        torch.testing.assert_close(a[t], b[t], rtol=1e-4, atol=1e-5)
    sum(v.square().mean() for v in a.values()).backward()
    sum(v.square().mean() for v in b.values()).backward()
    grads = dict(fused.named_parameters())
    for pname, p in eager.named_parameters():
        torch.testing.assert_close(p.grad, grads[pname].grad, rtol=1e-3, atol=1e-5, msg=pname)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_file_round_trip(suffix, tmp_path):
    source = timm.create_model("mobilenetv3_small_100")  # the full timm model, classifier included
    with torch.no_grad():
        for p in source.parameters():
            p.uniform_(-1, 1)
    path = tmp_path / ("weights" + suffix)
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save(source.state_dict(), path)
    enc = TimmEncoder("tu-mobilenetv3_small_100", 32, str(path))
    assert torch.equal(enc.model.conv_stem.weight, source.conv_stem.weight)
    m = build_model(dict(model="joint", encoder="tu-mobilenetv3_small_100", dilation=DIL[32], se=False,
                         pretrained=path.as_uri()), TASKS)
    assert torch.equal(m.encoder.model.conv_stem.weight, source.conv_stem.weight)


def test_pretrained_file_that_does_not_fit(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("regnety_002").state_dict(), path)
    with pytest.raises(ValueError, match=f"--pretrained {path} does not match --encoder tu-mobilenetv3_small_100"):
        TimmEncoder("tu-mobilenetv3_small_100", 32, str(path))
    with pytest.raises(FileNotFoundError, match="--pretrained: no such file"):
        TimmEncoder("tu-mobilenetv3_small_100", 32, str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="does not download"):
        TimmEncoder("tu-mobilenetv3_small_100", 32, "https://example.org/w.pth")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_dataset(root, train=4, val=2, size=(64, 64), seed=3, workers=1, progress=False)
    return root


@pytest.mark.slow
def test_train_eval_export(data_root, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(data_root, out, model="branched", encoder="tu-mobilenetv3_small_100", se=False,
                      dilation=(False, False, True), max_steps=1, eval_every=1))
    metrics = evaluate_checkpoint(str(out), str(data_root), workers=0)
    assert np.isfinite(metrics["multitask"])
    path = tmp_path / "model.onnx"
    assert_onnx_export_matches(out, path)
    assert Path(path).stat().st_size > 0


@pytest.mark.parametrize("name, params_m, gmacs", [
    ("efficientnet_b0", 10.42, 8.00), ("regnety_002", 10.33, 7.93),
    ("mobilenetv3_small_100", 11.55, 8.18), ("convnext_atto", 10.20, 8.19),
])
def test_cli_profile_matches_the_docs_table(name, params_m, gmacs, capsys):
    assert main(["profile", "--model", "branched", "--tasks", "semseg,depth", "--encoder", "tu-" + name,
                 "--dilation", "F,F,T", "--no-se", "--size", "256x256", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] / 1e6 == pytest.approx(params_m, abs=0.005)  # docs/models.md's table
    assert result["gmacs"] == pytest.approx(gmacs, abs=0.005)


def test_cli_refuses_the_default_se_for_a_timm_encoder(capsys):
    assert main(["profile", "--encoder", "tu-mobilenetv3_small_100", "--size", "64x64"]) == 2
    err = capsys.readouterr().err
    assert "--se" in err and "--no-se" in err and len(err.strip().splitlines()) == 1
