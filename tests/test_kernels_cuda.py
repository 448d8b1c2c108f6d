"""The fused ops on a real GPU: FASTMTL_KERNELS=auto runs the Triton kernels on CUDA tensors.

Every entry of ``CASES`` builds a fused module, its plain-PyTorch reference (same state) and
inputs; every test below runs every case:

* output and every gradient (inputs that require grad, all parameters) against the fp64
  reference: ``max|fused - ref64| <= 2 max|reference_same_dtype - ref64| + atol`` for fp32
  (TF32 convolutions on both sides), fp16 and bf16, NCHW and channels_last;
* ``torch.compile(fullgraph=True)`` with Inductor against eager;
* run-to-run determinism (bitwise).

``OPCHECKS`` lists ``(op, args)`` builders for ``torch.library.opcheck`` on CUDA.
To cover another op (e.g. ASPP), append a :class:`Case` and its opcheck entries.
"""
import copy
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fastmtl.nn as fnn
from fastmtl.kernels.se_scale import se_scale, se_scale_backward
from fastmtl.kernels.sigmoid_gate import sigmoid_gate, sigmoid_gate_backward
from fastmtl.kernels.silog import silog_stats, silog_stats_backward
from fastmtl.models import heads

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DEVICE = "cuda"
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def auto_mode(monkeypatch):
    monkeypatch.setenv("FASTMTL_KERNELS", "auto")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@dataclass(frozen=True)
class Case:
    """``build(channels_last) -> (fused, reference, inputs)`` on the CPU in fp32; inputs
    that should get gradients have ``requires_grad`` set. The harness moves everything to
    the GPU and to the dtype under test (floating inputs only)."""

    name: str
    build: Callable[[bool], Tuple[nn.Module, nn.Module, Sequence[Tensor]]]


def _fmt(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


class _SETail(nn.Module):
    """``relu(se(x) + identity)`` through a fused or a reference SE module."""

    def __init__(self, se: nn.Module):
        super().__init__()
        self.se = se

    def forward(self, x, identity):
        if getattr(self.se, "fuses_residual", False):
            return self.se(x, identity=identity)
        return F.relu(self.se(x) + identity)


def _build_se(channels_last: bool, tail: bool):
    ref = heads.SqueezeExcitation(96, reduction=16)
    fused = fnn.SqueezeExcitation(96, reduction=16)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(4, 96, 33, 35).contiguous(memory_format=_fmt(channels_last)).requires_grad_()
    if not tail:
        return fused, ref, (x,)
    identity = torch.randn(4, 96, 33, 35).contiguous(memory_format=_fmt(channels_last)).requires_grad_()
    return _SETail(fused), _SETail(ref), (x, identity)


def _build_attention(channels_last: bool):
    ref = heads.SelfAttention(16, 24, attention_init="default")
    fused = fnn.SelfAttention(16, 24)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(3, 16, 29, 31).contiguous(memory_format=_fmt(channels_last)).requires_grad_()
    residual = torch.randn(3, 24, 29, 31).contiguous(memory_format=_fmt(channels_last)).requires_grad_()
    return fused.to(memory_format=_fmt(channels_last)), ref.to(memory_format=_fmt(channels_last)), (x, residual)


class _TextbookSILog(nn.Module):
    """The SI-log loss written with plain tensor ops (images without valid pixels excluded)."""

    def forward(self, pred, target):
        valid = torch.isfinite(target) & (target > 0)
        d = torch.where(valid, torch.log(target.clamp_min(0.01)) - torch.log(pred.clamp(4.0, 300.0)), 0).flatten(1)
        count = valid.flatten(1).sum(1)
        safe = count.clamp_min(1)
        v = ((d * d).sum(1) / safe - (d.sum(1) / safe) ** 2).clamp_min(0)
        per_image = 100 * torch.sqrt(torch.where(count > 0, v, 1) + 1e-8)
        return torch.where(count > 0, per_image, 0).sum() / (count > 0).sum().clamp_min(1)


def _build_silog(channels_last: bool):
    pred = (torch.rand(4, 1, 37, 41) * 320 + 1).contiguous(memory_format=_fmt(channels_last)).requires_grad_()
    target = torch.rand(4, 1, 37, 41) * 290 + 0.5
    target[0, 0, :5] = 0
    target[1, 0, 3, 3] = float("nan")
    target[2] = 0
    fused = fnn.SILogLoss(min_depth=4.0, max_depth=300.0, eps=0.01, scale=100.0)
    return fused, _TextbookSILog(), (pred, target.contiguous(memory_format=_fmt(channels_last)))


CASES: List[Case] = [
    Case("se_scale", lambda cl: _build_se(cl, tail=False)),
    Case("se_scale_tail", lambda cl: _build_se(cl, tail=True)),
    Case("sigmoid_gate_attention", _build_attention),
    Case("silog", _build_silog),
]


def _on_gpu(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    return copy.deepcopy(module).to(device=DEVICE, dtype=dtype)


def _run(module: nn.Module, inputs: Sequence[Tensor], dtype: torch.dtype, grad_seed: int = 0):
    """Output and gradients (inputs that require grad, then parameters) of ``module(*inputs)``,
    ``module`` already on the GPU in ``dtype``."""
    xs = [t.detach().to(device=DEVICE, dtype=dtype if t.is_floating_point() else None).requires_grad_(t.requires_grad) for t in inputs]
    out = module(*xs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    wrt = [t for t in xs if t.requires_grad] + list(module.parameters())
    grads = torch.autograd.grad(out, wrt, g.to(device=DEVICE, dtype=out.dtype))
    return [out.detach(), *grads]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_output_and_every_gradient_against_fp64_reference(case, dtype, channels_last):
    fused, reference, inputs = case.build(channels_last)
    got = _run(_on_gpu(fused, dtype), inputs, dtype)
    same = _run(_on_gpu(reference, dtype), inputs, dtype)
    ref = _run(_on_gpu(reference, torch.float64), inputs, torch.float64)
    assert len(got) == len(ref)
    for i, (a, s, r) in enumerate(zip(got, same, ref)):
        assert a.shape == r.shape and a.dtype in ((dtype, torch.float32) if i == 0 else (dtype,)), i  # losses: fp32
        err, err_same = (a.double() - r).abs().max(), (s.double() - r).abs().max()
        assert err <= 2 * err_same + ATOL[dtype] * r.abs().max().clamp_min(1), (i, err.item(), err_same.item())
    if channels_last and got[0].dim() == 4:
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_inductor_fullgraph_matches_eager(case):
    fused, _, inputs = case.build(False)
    fused = _on_gpu(fused, torch.float32)
    compiled = torch.compile(fused, fullgraph=True)
    eager_out = _run(fused, inputs, torch.float32)
    compiled_out = _run(compiled, inputs, torch.float32)
    for a, b in zip(compiled_out, eager_out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_runs_are_bitwise_deterministic(case):
    fused, _, inputs = case.build(True)
    fused = _on_gpu(fused, torch.float32)
    first, second = _run(fused, inputs, torch.float32), _run(fused, inputs, torch.float32)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def _cuda(*shape, **kw):
    return torch.randn(*shape, device=DEVICE, **kw)


def _depth(*shape, **kw):
    return torch.rand(*shape, device=DEVICE, **kw) + 0.5


OPCHECKS = [
    ("se_scale", se_scale,
     lambda: (_cuda(2, 6, 3, 4, requires_grad=True), _cuda(2, 6), _cuda(2), _cuda(6, 2), _cuda(6), _cuda(2, 6, 3, 4))),
    ("se_scale_backward", se_scale_backward,
     lambda: (_cuda(2, 6, 3, 4), _cuda(2, 6, 3, 4), _cuda(2, 6, 3, 4), _cuda(2, 6), _cuda(2), _cuda(6, 2), _cuda(6))),
    ("sigmoid_gate", sigmoid_gate, lambda: (_cuda(2, 3, 4, 5, requires_grad=True), _cuda(2, 3, 4, 5), _cuda(2, 3, 4, 5))),
    ("sigmoid_gate_backward", sigmoid_gate_backward, lambda: (_cuda(2, 3, 4, 5), _cuda(2, 3, 4, 5), _cuda(2, 3, 4, 5))),
    ("silog_stats", silog_stats, lambda: (_depth(2, 1, 4, 5, requires_grad=True), _depth(2, 1, 4, 5), 0.5, 10.0, 0.01, False)),
    ("silog_stats_backward", silog_stats_backward, lambda: (_cuda(2, 3), _depth(2, 4, 5), _depth(2, 4, 5), None, None, 0.01, False)),
]


@pytest.mark.parametrize("name, op, make_args", OPCHECKS, ids=[o[0] for o in OPCHECKS])
def test_opcheck_on_cuda(name, op, make_args):
    torch.library.opcheck(op, make_args())


def _free_gpu_bytes() -> int:
    return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0


@pytest.mark.skipif(_free_gpu_bytes() < 48 * 2**30, reason="needs 48 GiB of free GPU memory")
def test_more_than_2_31_elements_use_int64_offsets():
    """Tensors of 2**31 + a few elements (fp16): the tail must be computed like the head."""
    n, c, h, w = 2, 16, 8192, 8193  # 2 * 16 * 8192 * 8193 > 2**31
    x = torch.randn(n, c, h, w, device=DEVICE, dtype=torch.float16)
    assert x.numel() > 2**31
    w1, b1, w2, b2 = _cuda(4, c), _cuda(4), _cuda(c, 4), _cuda(c)
    out = se_scale(x, w1, b1, w2, b2)
    gate = torch.sigmoid(F.linear(F.relu(F.linear(x.float().mean((2, 3)), w1, b1)), w2, b2))
    torch.testing.assert_close(out[-1, -1, -3:], (x[-1, -1, -3:].float() * gate[-1, -1]).half(), rtol=2e-3, atol=2e-3)
    gated = sigmoid_gate(x, x)
    torch.testing.assert_close(gated[-1, -1, -3:], (x[-1, -1, -3:].float() * torch.sigmoid(x[-1, -1, -3:].float())).half())
