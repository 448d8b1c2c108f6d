"""A tiny training configuration shared by the trainer tests (tests/ is on sys.path)."""
import pytest
import torch

from fastmtl.config import Config


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread (autouse in every test module that imports it): on a shared 2-core
    machine two threads are much slower under load."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(data_root, out, **overrides) -> Config:
    """ResNet-18 with dilation F,F,T on 64x64 crops, batch 2, 4 steps, evaluated every 2, on the CPU;
    ``overrides`` replace any field (e.g. ``model="joint"``)."""
    cfg = dict(model="distill", encoder="resnet18", dilation=(False, False, True), data_root=str(data_root),
               size=(64, 64), batch_size=2, workers=0, max_steps=4, eval_every=2, quiet=True, out=str(out),
               lr=1e-3, device="cpu")
    cfg.update(overrides)
    return Config(**cfg)


def assert_onnx_export_matches(run_dir, path) -> None:
    """``fastmtl export --format onnx`` of ``run_dir`` to ``path``; onnxruntime's outputs on a 64x64
    input equal the deployed eager model's."""
    import numpy as np
    import onnxruntime as ort

    from fastmtl.cli import main
    from fastmtl.export import deploy_model

    assert main(["export", "--checkpoint", str(run_dir), "--format", "onnx", "--out", str(path)]) == 0
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"rgb": x.numpy()})
    deployed, _ = deploy_model(str(run_dir))
    with torch.no_grad():
        want = [t.numpy() for t in deployed(x)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
