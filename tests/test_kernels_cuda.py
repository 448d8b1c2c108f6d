"""Every check of the fused ops on a real GPU: FASTMTL_KERNELS=auto runs the Triton kernels on
CUDA tensors.

The kernels must be compiled, not interpreted: tests/conftest.py turns the Triton interpreter
on unless ``TRITON_INTERPRET`` is already set, so on a GPU run
``TRITON_INTERPRET=0 pytest tests/test_kernels_cuda.py``. Without a GPU (or with the
interpreter on) the whole module skips.

Every entry of ``CASES`` builds a fused module, its plain-PyTorch reference (same state) and
inputs; every test below runs every case:

* output, every gradient (inputs that require grad, all parameters) and every floating buffer
  (BatchNorm running statistics) against the fp64 reference:
  ``max|fused - ref64| <= 2 max|reference_same_dtype - ref64| + atol * max(max|ref64|, 1)``
  for fp32 (TF32 convolutions on both sides), fp16, bf16 and fp64, NCHW and channels_last;
* ``torch.compile(fullgraph=True)`` with Inductor against eager;
* run-to-run determinism (bitwise).

``OPCHECKS`` lists ``(op, args)`` builders for ``torch.library.opcheck`` on CUDA and
``GRADCHECKS`` ``(function, inputs)`` builders for an fp64 ``gradcheck`` on CUDA. To cover
another op, append a :class:`Case` and its opcheck and gradcheck entries.

Also here: ASPP under autocast, a whole fused model under ``torch.compile(fullgraph=True)``
against the unfused one, and tensors of more than 2**31 elements.
"""
import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fastmtl.nn as fnn
from fastmtl.config import Config
from fastmtl.kernels.aspp import aspp_project, aspp_project_backward, aspp_project_reference
from fastmtl.kernels.bn_relu import batch_norm_relu, bn_relu, bn_relu_backward
from fastmtl.kernels.dispatch import interpreter_enabled
from fastmtl.kernels.se_scale import se_scale, se_scale_backward
from fastmtl.kernels.sigmoid_gate import sigmoid_gate, sigmoid_gate_backward
from fastmtl.kernels.silog import silog_stats, silog_stats_backward
from fastmtl import layers
from fastmtl.models import build_model
from test_kernels_aspp import _modules as aspp_module_pair  # tests/ is on sys.path (pytest's rootdir conftest)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(interpreter_enabled(), reason="Triton interpreter on: run with TRITON_INTERPRET=0"),
]

DEVICE = "cuda"
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2, torch.float64: 1e-10}


@pytest.fixture(autouse=True)
def auto_mode(monkeypatch):
    monkeypatch.setenv("FASTMTL_KERNELS", "auto")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _exact_fp32():
    """cuDNN without TF32 (the ASPP kernels then also use exact fp32 products)."""
    return torch.backends.cudnn.flags(enabled=True, allow_tf32=False)


@dataclass(frozen=True)
class Case:
    """``build(channels_last) -> (fused, reference, inputs)`` on the CPU in fp32; inputs
    that should get gradients have ``requires_grad`` set. The harness moves everything to
    the GPU and to the dtype under test (floating inputs only). ``atol`` overrides
    :data:`ATOL` per dtype."""

    name: str
    build: Callable[[bool], Tuple[nn.Module, nn.Module, Sequence[Tensor]]]
    atol: Dict[torch.dtype, float] = field(default_factory=dict)


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
    ref = layers.SqueezeExcitation(96, reduction=16)
    fused = fnn.FusedSqueezeExcitation(96, reduction=16)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(4, 96, 33, 35).contiguous(memory_format=_fmt(channels_last)).requires_grad_()
    if not tail:
        return fused, ref, (x,)
    identity = torch.randn(4, 96, 33, 35).contiguous(memory_format=_fmt(channels_last)).requires_grad_()
    return _SETail(fused), _SETail(ref), (x, identity)


def _build_attention(channels_last: bool):
    ref = layers.SelfAttention(16, 24, attention_init="default")
    fused = fnn.FusedSelfAttention(16, 24)
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


class _Project(nn.Module):
    """``aspp_project(branches, weight[:, ::2], bias, scale, shift, relu=True)`` (or its
    reference): a strided weight view, the BatchNorm epilogue and ReLU."""

    def __init__(self, fused: bool, k: int, cb: int, cout: int):
        super().__init__()
        self.fused = fused
        self.weight = nn.Parameter(torch.randn(cout, 2 * k * cb) / (k * cb) ** 0.5)
        self.scale = nn.Parameter(torch.rand(cout) + 0.5)
        self.shift = nn.Parameter(torch.randn(cout))

    def forward(self, bias, *branches):
        op = aspp_project if self.fused else aspp_project_reference
        return op(list(branches), self.weight[:, ::2], bias, self.scale, self.shift, relu=True)


def _build_project(channels_last: bool, k: int = 5):
    """Five branches: more than one launch's worth (the kernels chain launches of four)."""
    n, cb, cout, h, w = 3, 96, 80, 33, 29
    fused, ref = _Project(True, k, cb, cout), _Project(False, k, cb, cout)
    ref.load_state_dict(fused.state_dict())
    branches = [torch.randn(n, cb, h, w).contiguous(memory_format=_fmt(channels_last)).requires_grad_() for _ in range(k)]
    return fused, ref, (torch.randn(n, cout, requires_grad=True), *branches)


def _aspp_modules():
    """``(fused, reference)`` ASPP (64 -> 48 channels, rates 2, 4, 6) with identical,
    non-trivial BatchNorm parameters and statistics."""
    ref, fused = aspp_module_pair(in_ch=64, out_ch=48, rates=(2, 4, 6))
    return fused, ref


def _build_aspp(channels_last: bool, train: bool):
    fused, ref = _aspp_modules()
    fused.train(train), ref.train(train)
    x = torch.randn(2, 64, 17, 19).contiguous(memory_format=_fmt(channels_last)).requires_grad_()
    return fused.to(memory_format=_fmt(channels_last)), ref.to(memory_format=_fmt(channels_last)), (x,)


def _build_bn_relu(channels_last: bool):
    """FusedBatchNormReLU against BatchNorm2d + ReLU (training mode): several channel blocks and
    splits, partial tiles, channel means far from 0."""
    ref = nn.Sequential(nn.BatchNorm2d(80), nn.ReLU(inplace=True))
    with torch.no_grad():
        ref[0].weight.uniform_(0.5, 1.5), ref[0].bias.uniform_(-0.5, 0.5)
        ref[0].running_mean.normal_(0, 0.1), ref[0].running_var.uniform_(0.5, 1.5)
    fused = fnn.FusedBatchNormReLU(80)
    fused.load_state_dict(ref[0].state_dict())
    x = torch.randn(6, 80, 37, 41) * 2 + torch.randn(1, 80, 1, 1) * 3
    return fused, ref, (x.contiguous(memory_format=_fmt(channels_last)).requires_grad_(),)


# fp32: the projection GEMM runs in TF32 on both sides, but cuDNN may pick another algorithm
_ASPP_ATOL = {torch.float32: 8 * 2.0**-10}

CASES: List[Case] = [
    Case("se_scale", lambda cl: _build_se(cl, tail=False)),
    Case("se_scale_tail", lambda cl: _build_se(cl, tail=True)),
    Case("sigmoid_gate_attention", _build_attention),
    Case("silog", _build_silog),
    Case("aspp_project", _build_project, _ASPP_ATOL),
    Case("aspp_eval", lambda cl: _build_aspp(cl, train=False), _ASPP_ATOL),  # BN + ReLU in the epilogue
    Case("aspp_train", lambda cl: _build_aspp(cl, train=True), _ASPP_ATOL),  # batch statistics
    Case("bn_relu", _build_bn_relu),  # compiled: the module's F.batch_norm + relu path against the op
]


def _on_gpu(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``module`` on the GPU in ``dtype`` (a fresh one per run: BatchNorm running
    statistics change in training mode)."""
    return copy.deepcopy(module).to(device=DEVICE, dtype=dtype)


def _run(module: nn.Module, inputs: Sequence[Tensor], dtype: torch.dtype, grad_seed: int = 0):
    """Output, gradients (inputs that require grad, then parameters) and floating buffers
    after one ``module(*inputs)``, ``module`` already on the GPU in ``dtype``."""
    xs = [t.detach().to(device=DEVICE, dtype=dtype if t.is_floating_point() else None).requires_grad_(t.requires_grad) for t in inputs]
    out = module(*xs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    wrt = [t for t in xs if t.requires_grad] + list(module.parameters())
    grads = torch.autograd.grad(out, wrt, g.to(device=DEVICE, dtype=out.dtype))
    buffers = [b.detach() for b in module.buffers() if b.is_floating_point()]
    return [out.detach(), *grads, *buffers]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_output_every_gradient_and_buffer_against_fp64_reference(case, dtype, channels_last):
    fused, reference, inputs = case.build(channels_last)
    got = _run(_on_gpu(fused, dtype), inputs, dtype)
    same = _run(_on_gpu(reference, dtype), inputs, dtype)
    ref = _run(_on_gpu(reference, torch.float64), inputs, torch.float64)
    atol = case.atol.get(dtype, ATOL[dtype])
    assert len(got) == len(ref)
    for i, (a, s, r) in enumerate(zip(got, same, ref)):
        assert a.shape == r.shape and a.dtype in ((dtype, torch.float32) if i == 0 else (dtype,)), i  # losses: fp32
        err, err_same = (a.double() - r).abs().max(), (s.double() - r).abs().max()
        assert err <= 2 * err_same + atol * r.abs().max().clamp_min(1), (i, err.item(), err_same.item())
    if channels_last and got[0].dim() == 4:
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_inductor_fullgraph_matches_eager(case):
    fused, _, inputs = case.build(False)
    with _exact_fp32():  # eager and compiled may pick different cuDNN algorithms
        eager_out = _run(_on_gpu(fused, torch.float32), inputs, torch.float32)
        compiled_out = _run(torch.compile(_on_gpu(fused, torch.float32), fullgraph=True), inputs, torch.float32)
    assert len(compiled_out) == len(eager_out)
    for a, b in zip(compiled_out, eager_out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_runs_are_bitwise_deterministic(case):
    fused, _, inputs = case.build(True)
    with torch.backends.cudnn.flags(enabled=True, deterministic=True):  # only fastmtl's kernels are on trial
        first = _run(_on_gpu(fused, torch.float32), inputs, torch.float32)
        second = _run(_on_gpu(fused, torch.float32), inputs, torch.float32)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def _cuda(*shape, **kw):
    return torch.randn(*shape, device=DEVICE, **kw)


def _depth(*shape, **kw):
    return torch.rand(*shape, device=DEVICE, **kw) + 0.5


def _aspp_args(k=5, channels_last=False, requires_grad=False):
    """``(branches, weight, bias, scale, shift)`` for ``aspp_project``, small."""
    fmt = _fmt(channels_last)
    branches = [_cuda(2, 3, 2, 3).contiguous(memory_format=fmt) for _ in range(k)]
    tensors = [*branches, _cuda(5, 3 * k), _cuda(2, 5), _depth(5), _cuda(5)]
    for t in tensors:
        t.requires_grad_(requires_grad)
    return branches, *tensors[k:]


def _aspp_backward_args(channels_last, with_preact):
    branches, weight, bias, scale, shift = _aspp_args(channels_last=channels_last)
    out = aspp_project(branches, weight, bias, scale, shift, relu=True)
    preact = aspp_project(branches, weight, bias) if with_preact else None
    return torch.randn_like(out), out, branches, weight, bias, scale, preact, True


OPCHECKS = [
    ("se_scale", se_scale,
     lambda: (_cuda(2, 6, 3, 4, requires_grad=True), _cuda(2, 6), _cuda(2), _cuda(6, 2), _cuda(6), _cuda(2, 6, 3, 4))),
    ("se_scale_backward", se_scale_backward,
     lambda: (_cuda(2, 6, 3, 4), _cuda(2, 6, 3, 4), _cuda(2, 6, 3, 4), _cuda(2, 6), _cuda(2), _cuda(6, 2), _cuda(6))),
    ("sigmoid_gate", sigmoid_gate, lambda: (_cuda(2, 3, 4, 5, requires_grad=True), _cuda(2, 3, 4, 5), _cuda(2, 3, 4, 5))),
    ("sigmoid_gate_backward", sigmoid_gate_backward, lambda: (_cuda(2, 3, 4, 5), _cuda(2, 3, 4, 5), _cuda(2, 3, 4, 5))),
    ("silog_stats", silog_stats, lambda: (_depth(2, 1, 4, 5, requires_grad=True), _depth(2, 1, 4, 5), 0.5, 10.0, 0.01, False)),
    ("silog_stats_backward", silog_stats_backward, lambda: (_cuda(2, 3), _depth(2, 4, 5), _depth(2, 4, 5), None, None, 0.01, False)),
    ("aspp_project", aspp_project, lambda: (*_aspp_args(k=4, requires_grad=True), True)),
    ("aspp_project_nhwc_5branches", aspp_project, lambda: (*_aspp_args(k=5, channels_last=True, requires_grad=True), True)),
    ("aspp_project_backward", aspp_project_backward, lambda: _aspp_backward_args(False, with_preact=True)),
    ("aspp_project_backward_nhwc", aspp_project_backward, lambda: _aspp_backward_args(True, with_preact=False)),
    ("bn_relu", bn_relu, lambda: (_cuda(2, 6, 3, 4), _cuda(6), _cuda(6), _cuda(6), _depth(6), 0.1, 1e-5)),
    ("bn_relu_nhwc_no_affine", bn_relu,
     lambda: (_cuda(2, 6, 3, 4).contiguous(memory_format=torch.channels_last), None, None, None, None, 0.1, 1e-5)),
    ("bn_relu_backward", bn_relu_backward,
     lambda: (_cuda(2, 6, 3, 4), _cuda(2, 6, 3, 4), _cuda(6), _cuda(6), _cuda(6), _depth(6))),
]


@pytest.mark.parametrize("name, op, make_args", OPCHECKS, ids=[o[0] for o in OPCHECKS])
def test_opcheck_on_cuda(name, op, make_args):
    torch.library.opcheck(op, make_args())


def _leaves(*tensors):
    return tuple(t.double().requires_grad_() for t in tensors)


def _silog_inputs():
    """Predictions inside the clamp range ``[4, 80]``, targets with an invalid pixel."""
    pred = torch.rand(2, 1, 3, 4, device=DEVICE, dtype=torch.float64) * 60 + 10
    target = torch.rand(2, 1, 3, 4, device=DEVICE, dtype=torch.float64) * 60 + 1
    target[0, 0, 0, 0] = 0
    return pred.requires_grad_(), target


def _aspp_leaves():
    branches, *rest = _aspp_args(k=5)
    return _leaves(*branches, *rest)


GRADCHECKS = [
    ("se_scale", se_scale, lambda: _leaves(_cuda(2, 4, 2, 3), _cuda(2, 4), _cuda(2), _cuda(4, 2), _cuda(4), _cuda(2, 4, 2, 3))),
    ("sigmoid_gate", sigmoid_gate, lambda: _leaves(_cuda(2, 3, 2, 3), _cuda(2, 3, 2, 3), _cuda(2, 3, 2, 3))),
    ("silog_stats", lambda p, t: silog_stats(p, t, 4.0, 80.0, 0.01, False), _silog_inputs),
    ("aspp_project", lambda *a: aspp_project(list(a[:5]), *a[5:], relu=True), _aspp_leaves),
    ("bn_relu", lambda x, w, b: batch_norm_relu(x, w, b, None, None), lambda: _leaves(_cuda(2, 3, 2, 3), _cuda(3), _cuda(3))),
]


@pytest.mark.parametrize("name, fn, make_inputs", GRADCHECKS, ids=[g[0] for g in GRADCHECKS])
def test_gradcheck_fp64_on_cuda(name, fn, make_inputs):
    assert torch.autograd.gradcheck(fn, make_inputs())


def test_aspp_under_autocast_matches_reference():
    fused, ref = (m.to(DEVICE) for m in _aspp_modules())
    x = _cuda(2, 64, 17, 19)
    with torch.autocast("cuda", dtype=torch.float16):
        y, y_ref = fused(x), ref(x)
    assert y.dtype == y_ref.dtype == torch.float16
    torch.testing.assert_close(y, y_ref, rtol=2e-2, atol=2e-2)


def _model_outputs_and_grads(model: nn.Module, x: Tensor) -> List[Tensor]:
    """Every prediction, then the gradient of a fixed random weighting of them wrt every
    parameter, then the floating buffers."""
    out = model(x)
    preds = [p for task in sorted(out) for p in (out[task] if isinstance(out[task], list) else [out[task]])]
    gen = torch.Generator().manual_seed(1)
    loss = sum((p * torch.randn(p.shape, generator=gen).to(p.device)).sum() for p in preds)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return [p.detach() for p in preds] + list(grads) + [b for b in model.buffers() if b.is_floating_point()]


@pytest.mark.slow
def test_compiled_fused_model_matches_the_unfused_model():
    """In fp64: the model at initialisation amplifies rounding errors a thousandfold (an fp32
    channels_last run of the unfused model is ~1e-3 off its own NCHW run), which would hide
    small mistakes; the ops' fp32/fp16/bf16 numerics are the business of ``CASES``."""
    config = Config(model="distill_allconnect", encoder="resnet18")
    desc = {"semseg": 5, "depth": 1}
    unfused = build_model(config, desc)
    fused = build_model(config, desc, fused=True)
    fused.load_state_dict(unfused.state_dict())
    kinds = {type(m) for m in fused.modules()}
    assert {fnn.FusedSqueezeExcitation, fnn.FusedSelfAttention, fnn.FusedASPP} <= kinds, kinds
    unfused, fused = (m.to(DEVICE, torch.float64).train() for m in (unfused, fused))
    x = _cuda(4, 3, 64, 96, dtype=torch.float64)  # 4 images: the pooling branch's BatchNorm is not degenerate
    want = _model_outputs_and_grads(unfused, x)
    got = _model_outputs_and_grads(torch.compile(fused, fullgraph=True), x)
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, i
        err, allowed = (a - b).norm(), 1e-7 * b.norm() + 1e-10 * b.numel() ** 0.5
        assert err <= allowed, (i, err.item(), allowed.item())


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
