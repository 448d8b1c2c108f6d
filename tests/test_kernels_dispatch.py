"""FASTMTL_KERNELS (:mod:`fastmtl.kernels.dispatch`) picks every op's implementation at every call."""
import subprocess
import sys

import pytest
import torch

from fastmtl.kernels import aspp, bn_relu, se_scale, sigmoid_gate, silog


def _se_scale_call():
    args = (torch.randn(2, 6, 3, 4), torch.randn(2, 6), torch.randn(2), torch.randn(6, 2), torch.randn(6))
    return lambda: se_scale.se_scale(*args)


def _sigmoid_gate_call():
    f, a = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    return lambda: sigmoid_gate.sigmoid_gate(f, a)


def _silog_stats_call():
    pred, target = torch.rand(2, 1, 4, 5) + 0.5, torch.rand(2, 1, 4, 5)
    target[0, 0, 0] = 0
    return lambda: silog.silog_stats(pred, target)


def _aspp_project_call():
    branches, weight, bias = [torch.randn(2, 3, 2, 3) for _ in range(2)], torch.randn(5, 6), torch.randn(2, 5)
    return lambda: aspp.aspp_project(branches, weight, bias)


def _bn_relu_call():
    x, weight, bias = torch.randn(2, 3, 4, 5), torch.randn(3), torch.randn(3)
    return lambda: bn_relu.bn_relu(x, weight, bias, None, None)


OPS = [  # (the op's launch module, where the op looks its launchers up; its forward launcher; a builder of the op call)
    (se_scale.launch, "se_scale_forward_triton", _se_scale_call),
    (sigmoid_gate.launch, "sigmoid_gate_forward_triton", _sigmoid_gate_call),
    (silog.launch, "silog_stats_triton", _silog_stats_call),
    (aspp.launch, "aspp_project_forward_triton", _aspp_project_call),
    (bn_relu.launch, "bn_relu_forward_triton", _bn_relu_call),
]


@pytest.mark.parametrize("module, launcher, make_call", OPS, ids=[launcher for _, launcher, _ in OPS])
def test_kernel_mode_is_read_at_every_call(monkeypatch, module, launcher, make_call):
    monkeypatch.setenv("FASTMTL_KERNELS", "triton")
    calls = []
    real = getattr(module, launcher)
    monkeypatch.setattr(module, launcher, lambda *a, **k: calls.append(1) or real(*a, **k))
    call = make_call()
    want = call()
    assert len(calls) == 1
    for mode in ("reference", "auto"):  # auto on CPU tensors -> reference
        monkeypatch.setenv("FASTMTL_KERNELS", mode)
        torch.testing.assert_close(call(), want)
        assert len(calls) == 1
    monkeypatch.setenv("FASTMTL_KERNELS", "triton")
    call()
    assert len(calls) == 2


def test_importing_the_package_registers_every_op():
    code = ("import torch, fastmtl.kernels; "
            "print(sorted(n for n in dir(torch.ops.fastmtl) if not n.startswith('_') and n != 'name'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    ops = ["aspp_project", "bn_relu", "se_scale", "sigmoid_gate", "sigmoid_gate_halves", "silog_stats"]
    assert out.strip() == str(sorted(ops + [op + "_backward" for op in ops]))


def test_an_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FASTMTL_KERNELS", "fast")
    with pytest.raises(ValueError, match="FASTMTL_KERNELS must be one of"):
        sigmoid_gate.sigmoid_gate(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 2, 2))
