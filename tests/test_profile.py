"""Profiling reproduces the report's Table 9 (256x256 input) and the CLI prints it."""
import json

import pytest
import torch

from fastmtl.cli import main
from fastmtl.config import Config
from fastmtl.models import build_model
from fastmtl.perf.profile import count_macs, count_params, profile_model

DESC = {"semseg": 19, "depth": 1}


@pytest.mark.parametrize("model,params_m,gmacs", [("joint", 26.13, 11.24), ("branched", 30.96, 15.15)])
def test_table9(model, params_m, gmacs):
    m = build_model(Config(model=model, encoder="resnet34", dilation=(False, False, True), se=False), DESC)
    assert count_params(m) / 1e6 == pytest.approx(params_m, abs=0.005)
    macs, _ = count_macs(m, (256, 256))
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_macs_breakdown_sums_to_total():
    m = build_model(Config(model="branched", encoder="resnet18", dilation=(False, False, True)), DESC)
    total, per_module = count_macs(m, (64, 64), depth=1)
    assert set(per_module) == {"encoder", "aspp", "decoder"}
    assert sum(per_module.values()) == total


def test_throughput_reports_positive_rates():
    cfg = Config(model="joint", encoder="resnet18", dilation=(False, False, True), fused=False)
    r = profile_model(cfg, (64, 64), throughput=True, device="cpu", batch_size=2)
    assert r["forward_images_per_s"] > 0 and r["train_images_per_s"] > 0
    assert r["device"] == "cpu"
    assert r["params"] == count_params(build_model(cfg, DESC))


def test_cli_profile_json(capsys):
    rc = main(["profile", "--model", "joint", "--encoder", "resnet34", "--dilation", "F,F,T", "--aspp", "--skip",
               "--no-se", "--size", "256x256", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out["params"], int) and isinstance(out["macs"], int)
    assert out["params"] == 26125748
    assert out["macs"] / 1e9 == pytest.approx(11.24, rel=0.01)


def test_cli_profile_table_with_depth(capsys):
    assert main(["profile", "--model", "distill", "--encoder", "resnet18", "--size", "64x64", "--depth", "2"]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "encoder.layer4" in out and "attention" in out


def test_cli_errors_are_clear(capsys):
    assert main(["profile", "--model", "nope"]) == 2
    assert "valid choices: joint, branched" in capsys.readouterr().err
    assert main(["profile", "--dilation", "F,F,T", "--size", "250x250"]) == 2
    assert "multiples of 16" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["profile", "--dilation", "F,F"])
    assert "three comma-separated flags" in capsys.readouterr().err


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "profile" in capsys.readouterr().out


def test_profile_under_inference_is_not_zero():
    m = build_model(Config(model="joint", encoder="resnet18"), DESC)
    with torch.no_grad():
        expected = count_macs(m, (32, 32))[0]
    with torch.inference_mode():  # FlopCounterMode alone would count 0 here
        assert count_macs(m, (32, 32))[0] == expected > 0


def test_both_dilation_styles_have_the_table9_counts():
    counts = []
    for style in ("template", "torchvision"):
        m = build_model(Config(model="joint", encoder="resnet34", dilation=(False, False, True), se=False,
                               dilation_style=style), DESC)
        counts.append((count_params(m), count_macs(m, (256, 256))[0]))
    assert counts[0] == counts[1] == (26125748, 11227234304)
