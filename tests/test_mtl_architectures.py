"""``--model mtan`` and ``--model cross_stitch``: shapes for 1-3 tasks, parameter counts by hand
(LibMTL's constructions), gradients to every task, state_dict round trip, a tiny train -> eval ->
ONNX export run, and gradient balancing on the shared representation."""
from pathlib import Path

import numpy as np
import pytest
import torch

from fastmtl.cli import main
from fastmtl.data.synthetic import generate_dataset
from fastmtl.evaluate import evaluate_checkpoint
from fastmtl.models import Encoder, build_model
from fastmtl.models.cross_stitch import stitch_init
from fastmtl.train import train
from tiny_runs import assert_onnx_export_matches, one_thread, tiny_config  # noqa: F401 (autouse fixture)

ARCHS = ("mtan", "cross_stitch")
TASKS = {"semseg": 5, "depth": 1, "normals": 3}
DIL = [False, False, True]


def desc(n):
    return dict(list(TASKS.items())[:n])


def model(name, n, **kw):
    torch.manual_seed(0)
    fields = dict(model=name, encoder="resnet18", dilation=DIL, se=False)
    fields.update(kw)
    return build_model(fields, desc(n))


def count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("dilation", [DIL, [False, False, False]])
def test_shapes(name, n, dilation):
    m = model(name, n, dilation=dilation)
    out = m(torch.randn(2, 3, 64, 96))
    assert {t: tuple(v.shape) for t, v in out.items()} == {t: (2, c, 64, 96) for t, c in desc(n).items()}


def attention_params(i_ch, mid, o_ch):  # 1x1 conv + BN + 1x1 conv + BN
    return i_ch * mid + mid + 2 * mid + mid * o_ch + o_ch + 2 * o_ch


def basic_block_params(i_ch, o_ch):  # two 3x3 convs + BNs, 1x1 downsample + BN
    return 9 * i_ch * o_ch + 2 * o_ch + 9 * o_ch * o_ch + 2 * o_ch + i_ch * o_ch + 2 * o_ch


@pytest.mark.parametrize("n", [1, 2, 3])
def test_params_match_the_constructions(n):
    branched = count(model("branched", n))
    ch = [64, 128, 256, 512]
    per_task_attention = attention_params(64, 64, 64) + sum(attention_params(2 * c, c, c) for c in ch[1:])
    blocks = sum(basic_block_params(ch[i], ch[i + 1]) for i in range(3))
    # MTAN = the branched HPS model + T attention sets + the shared attention blocks (LibMTL at T = 1)
    assert count(model("mtan", n)) == branched + n * per_task_attention + blocks
    # Cross-stitch = T ResNets + the branched heads + the (3, T, T) units
    encoder = count(Encoder("resnet18", DIL))
    assert count(model("cross_stitch", n)) == branched + (n - 1) * encoder + 3 * n * n


def test_stitch_init_is_the_papers():
    alpha = stitch_init(3)
    assert alpha.shape == (3, 3, 3)
    assert torch.allclose(alpha[0].diagonal(), torch.full((3,), 0.9))
    assert torch.allclose(alpha.sum(-1), torch.ones(3, 3))
    assert stitch_init(1).tolist() == [[[1.0]], [[1.0]], [[1.0]]]


@pytest.mark.parametrize("name", ARCHS)
def test_each_task_loss_reaches_its_parameters_and_the_shared_ones(name):
    m = model(name, 3)
    x = torch.randn(2, 3, 64, 64)
    for task in TASKS:
        m.zero_grad(set_to_none=True)
        m(x)[task].square().mean().backward()
        grads = {k: p.grad for k, p in m.named_parameters()}
        for group in ("aspp", "decoder") + (("attention",) if name == "mtan" else ("encoder.networks",)):
            mine = [g for k, g in grads.items() if k.startswith(f"{group}.{task}.")]
            assert mine and all(g is not None for g in mine) and sum(g.abs().sum() for g in mine) > 0, (task, group)
        others = [g for k, g in grads.items() if k.startswith("decoder.") and not k.startswith(f"decoder.{task}.")]
        assert all(g is None for g in others)
        if name == "mtan":
            shared = [g for k, g in grads.items() if k.startswith(("encoder.", "block_attention."))]
            assert all(g is not None for g in shared) and sum(g.abs().sum() for g in shared) > 0
        else:  # the stitch units carry task t's gradient into the other tasks' networks
            assert m.encoder.stitch.grad.abs().sum() > 0
            for other in TASKS:
                g = [p.grad for k, p in m.named_parameters() if k.startswith(f"encoder.networks.{other}.conv1")]
                assert g[0] is not None and g[0].abs().sum() > 0, other


@pytest.mark.parametrize("name", ARCHS)
def test_state_dict_round_trip(name):
    a, x = model(name, 2).eval(), torch.randn(1, 3, 64, 64)
    torch.manual_seed(1)
    b = build_model(dict(model=name, encoder="resnet18", dilation=DIL, se=False), desc(2)).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for t in desc(2):
            assert torch.equal(a(x)[t], b(x)[t])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_dataset(root, train=4, val=2, size=(64, 64), seed=3, workers=1, progress=False)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHS)
def test_train_eval_export(name, data_root, tmp_path, capsys):
    import json

    out = tmp_path / "run"
    train(tiny_config(data_root, out, model=name, max_steps=1, eval_every=1))
    metrics = evaluate_checkpoint(str(out), str(data_root), workers=0)
    assert np.isfinite(metrics["multitask"]) and "si_log_rmse" in metrics
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--data-root", str(data_root), "--workers", "0",
                 "--metric-style", "mtan", "--json"]) == 0
    captured = capsys.readouterr()
    mtan = json.loads(captured.out)
    assert mtan["miou"] == pytest.approx(metrics["miou"])  # semseg: one confusion matrix either way
    assert "eval" not in captured.err  # no progress bar off a terminal
    path = tmp_path / "model.onnx"
    assert_onnx_export_matches(out, path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHS)
def test_gradient_balancing_on_the_shared_representation(name, data_root, tmp_path):
    summary = train(tiny_config(data_root, tmp_path / "run", model=name, max_steps=1, eval_every=1,
                                weighting="pcgrad", weighting_grads="rep"))
    assert np.isfinite(summary["final_all"]["multitask"])


def test_the_architectures_sweep_file_parses(tmp_path, capsys):
    sweep = Path(__file__).resolve().parents[1] / "benchmarks" / "architectures" / "sweep.json"
    assert main(["sweep", str(sweep), "--out", str(tmp_path / "s"), "--print-commands"]) == 0
    commands = capsys.readouterr().out.splitlines()
    assert len(commands) == 6 * 3  # six variants, three seeds
    models = [c.split("--model ")[1].split()[0] for c in commands]
    assert {m: models.count(m) for m in set(models)} == {"branched": 9, "joint": 3, "mtan": 3, "cross_stitch": 3}
    assert sum("--tasks semseg,depth" in c for c in commands) == 12


@pytest.mark.parametrize("name,params_m", [("mtan", 37.88), ("cross_stitch", 52.25)])
def test_docs_table_params(name, params_m):
    m = build_model(dict(model=name, encoder="resnet34", dilation=DIL, se=False), {"semseg": 19, "depth": 1})
    assert count(m) / 1e6 == pytest.approx(params_m, abs=0.005)  # docs/models.md's table


@pytest.mark.parametrize("name", ARCHS)
def test_fused_equals_eager(name):
    eager = model(name, 2, se=True).eval()
    torch.manual_seed(0)
    fused = build_model(dict(model=name, encoder="resnet18", dilation=DIL, se=True), desc(2), fused=True).eval()
    fused.load_state_dict(eager.state_dict())
    assert any(type(m).__name__.startswith("Fused") for m in fused.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = eager(x), fused(x)
    for t in desc(2):
        torch.testing.assert_close(a[t], b[t])
