"""``fastmtl export``: ONNX (run with onnxruntime on CPU) and TorchScript files whose outputs equal
the eager model's, at sizes and batch sizes other than the traced one."""
import numpy as np
import pytest
import torch

from fastmtl.cli import main
from fastmtl.config import Config
from fastmtl.data.synthetic import generate_dataset
from fastmtl.export import deploy_model
from fastmtl.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_dataset(root, train=4, val=2, size=(64, 64), seed=3, workers=1, progress=False)
    out = tmp_path_factory.mktemp("runs") / "run"
    # distill_allconnect: deep supervision lists, attention, the all-scale decoder, SE in the encoder
    train(Config(model="distill_allconnect", encoder="resnet18", dilation=(False, True, True), data_root=str(root),
                 size=(64, 64), batch_size=2, workers=0, max_steps=1, eval_every=1, quiet=True, out=str(out),
                 device="cpu"))
    return out


def eager_outputs(run_dir, x):
    model, _ = deploy_model(str(run_dir))
    with torch.no_grad():
        return [t.numpy() for t in model(x)]


INPUTS = [(1, 64, 64), (2, 48, 80)]  # the traced size, then another batch and size (multiples of 8, OS8)


def test_onnx_equals_eager_in_onnxruntime(run_dir, tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(run_dir), "--format", "onnx", "--out", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version == 17
    assert [i.name for i in graph.graph.input] == ["rgb"] and [o.name for o in graph.graph.output] == ["semseg", "depth"]
    # only batch, height and width are dynamic: each task's channel axis is declared with its size
    declared = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.graph.output}
    assert declared == {"semseg": ["batch", 19, "height", "width"], "depth": ["batch", 1, "height", "width"]}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in INPUTS:
        x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(h))
        semseg, depth = session.run(None, {"rgb": x.numpy()})
        ref_semseg, ref_depth = eager_outputs(run_dir, x)
        assert semseg.shape == (n, 19, h, w) and depth.shape == (n, 1, h, w)
        np.testing.assert_allclose(semseg, ref_semseg, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(depth, ref_depth, rtol=1e-4, atol=1e-4)


def test_torchscript_equals_eager(run_dir, tmp_path):
    path = tmp_path / "model.pt"
    assert main(["export", "--checkpoint", str(run_dir), "--format", "torchscript", "--out", str(path)]) == 0
    loaded = torch.jit.load(str(path))
    for n, h, w in INPUTS:
        x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(w))
        with torch.no_grad():
            got = [t.numpy() for t in loaded(x)]
        for a, b in zip(got, eager_outputs(run_dir, x)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_export_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--format", "onnx"]) == 2
    assert "no such file" in capsys.readouterr().err
