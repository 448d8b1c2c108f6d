"""fastmtl::bn_relu (Triton through the interpreter) against nn.BatchNorm2d + ReLU, and
fastmtl.nn.FusedBatchNormReLU against the pair it replaces."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

import fastmtl.kernels.bn_relu as bn_mod
from fastmtl.kernels.bn_relu import batch_norm_relu, bn_relu, bn_relu_backward
from fastmtl.nn import FusedBatchNormReLU

pytestmark = pytest.mark.usefixtures("triton_mode")  # kernels through Triton (interpreter on CPU)

# (N, C, H, W) and launch overrides: the default geometry; N=1 with three splits and a partial
# last tile per image; several channel blocks, splits and tiles per split
GEOMETRIES = {
    "default": ((3, 37, 5, 7), {}),
    "n1-splits": ((1, 5, 9, 13), dict(block_c=4, block_p=8, splits=3)),
    "blocks": ((3, 37, 5, 7), dict(block_c=8, block_p=16, splits=4)),
}


def _fmt(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def _inputs(shape=(3, 37, 5, 7), dtype=torch.float32, channels_last=False, affine=True, running=True):
    """``(x, weight, bias, running_mean, running_var)``: channels of different means and scales."""
    n, c, h, w = shape
    x = torch.randn(shape) * (torch.rand(1, c, 1, 1) * 2 + 0.5) + torch.randn(1, c, 1, 1) * 3
    x = x.to(dtype).contiguous(memory_format=_fmt(channels_last))
    weight, bias = (torch.randn(c) * 0.5 + 1, torch.randn(c) * 0.5) if affine else (None, None)
    rm, rv = (torch.randn(c) * 0.1, torch.rand(c) + 0.5) if running else (None, None)
    return x, weight, bias, rm, rv


def _torch(x, weight, bias, rm, rv, grad, dtype=torch.float64, momentum=0.1, eps=1e-5):
    """``relu(F.batch_norm(training=True))`` in ``dtype`` (parameters as given when ``dtype`` is
    low precision, as autocast keeps them): output, running stats, gradients of x, weight, bias."""
    pdt = dtype if dtype == torch.float64 else None
    x = x.detach().to(dtype).requires_grad_()
    params = [p.detach().to(pdt).requires_grad_() if p is not None else None for p in (weight, bias)]
    running = [t.clone().to(pdt) if t is not None else None for t in (rm, rv)]
    out = F.relu(F.batch_norm(x, *running, *params, True, momentum, eps))
    grads = torch.autograd.grad(out, [x] + [p for p in params if p is not None], grad.to(dtype))
    return [out.detach(), *[t for t in running if t is not None], *grads]


def _fused(x, weight, bias, rm, rv, grad, overrides=None, poison=False):
    """The same through the op (``overrides`` None) or the launchers with ``overrides``;
    ``poison``: NaN-filled preallocated outputs. Also returns ``(mean, invstd)``."""
    rm, rv = (t.clone() if t is not None else None for t in (rm, rv))
    running = [t for t in (rm, rv) if t is not None]
    if overrides is None:
        leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, weight, bias)]
        out, mean, invstd = bn_relu(x, weight, bias, rm.clone() if rm is not None else None,
                                    rv.clone() if rv is not None else None, 0.1, 1e-5)
        y = batch_norm_relu(*leaves, rm, rv, 0.1, 1e-5)
        torch.testing.assert_close(y, out, rtol=0, atol=0)
        grads = torch.autograd.grad(y, [t for t in leaves if t is not None], grad)
        return [out, *running, *grads], (mean, invstd)
    nan = dict(out=torch.full_like(x, float("nan"))) if poison else {}
    out, mean, invstd = bn_mod.bn_relu_forward_triton(x, weight, bias, rm, rv, 0.1, 1e-5, **nan, **overrides)
    nan = dict(dx=torch.full_like(x, float("nan"))) if poison else {}
    dx, dw, db = bn_mod.bn_relu_backward_triton(grad, x, weight, bias, mean, invstd, **nan, **overrides)
    return [out, *running, dx, *[g for g, p in ((dw, weight), (db, bias)) if p is not None]], (mean, invstd)


def _assert_within(got, same, ref, atol):
    """The low-precision rule: ``max|got - ref| <= 2 max|same - ref| + atol * max(max|ref|, 1)``."""
    for i, (g, s, r) in enumerate(zip(got, same, ref)):
        err, err_same = (g.double() - r).abs().max(), (s.double() - r).abs().max()
        assert err <= 2 * err_same + atol * r.abs().max().clamp_min(1), (i, err.item(), err_same.item())


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_output_statistics_running_stats_and_gradients_match_torch(dtype, channels_last, geometry):
    shape, overrides = GEOMETRIES[geometry]
    x, weight, bias, rm, rv = _inputs(shape, dtype, channels_last)
    grad = torch.randn(shape, dtype=dtype).contiguous(memory_format=_fmt(channels_last))
    got, (mean, invstd) = _fused(x, weight, bias, rm, rv, grad, overrides or None, poison=bool(overrides))
    ref = _torch(x, weight, bias, rm, rv, grad)
    assert [t.dtype for t in got] == [dtype, torch.float32, torch.float32, dtype, torch.float32, torch.float32]
    assert got[0].is_contiguous(memory_format=_fmt(channels_last)) and got[3].is_contiguous(memory_format=_fmt(channels_last))
    x64 = x.double()
    assert mean.dtype == invstd.dtype == torch.float32
    torch.testing.assert_close(mean.double(), x64.mean((0, 2, 3)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(invstd.double(), torch.rsqrt(x64.var((0, 2, 3), unbiased=False) + 1e-5), rtol=1e-5, atol=0)
    if dtype == torch.float32:
        for g, r in zip(got, ref):
            torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-5)
    else:
        _assert_within(got, _torch(x, weight, bias, rm, rv, grad, dtype), ref, atol=1e-2)


def test_fp64_matches_torch_to_fp64_precision():
    x, weight, bias, rm, rv = (t.double() for t in _inputs(channels_last=True))
    grad = torch.randn_like(x)
    for overrides in (None, GEOMETRIES["blocks"][1]):
        got, _ = _fused(x, weight, bias, rm, rv, grad, overrides)
        for g, r in zip(got, _torch(x, weight, bias, rm, rv, grad)):
            assert g.dtype == torch.float64
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_large_mean_small_std_channel_keeps_its_variance():
    """A channel at 1000 +- 0.1 in fp32: ``E[x^2] - E[x]^2`` would lose every digit of the
    variance (1e-2 against 1e6); the per-tile deviations and Chan's merge keep it."""
    x, weight, bias, rm, rv = _inputs((2, 3, 16, 16))
    x[:, 1] = 1000 + 0.1 * torch.randn(2, 16, 16)
    x64 = x.double()
    var64 = x64.var((0, 2, 3), unbiased=False)
    naive = (x * x).mean((0, 2, 3)) - x.mean((0, 2, 3)) ** 2
    assert (naive[1] - var64[1]).abs() > 0.1 * var64[1]  # the trap is real
    grad = torch.randn_like(x)
    for overrides in (None, dict(block_c=2, block_p=32, splits=5)):
        got, (mean, invstd) = _fused(x, weight, bias, rm, rv, grad, overrides)
        torch.testing.assert_close(invstd.double(), torch.rsqrt(var64 + 1e-5), rtol=1e-4, atol=0)
        ref = _torch(x, weight, bias, rm, rv, grad)
        torch.testing.assert_close(got[2].double(), ref[2], rtol=1e-4, atol=1e-6)  # running_var
        _assert_within(got, _torch(x, weight, bias, rm, rv, grad, torch.float32), ref, atol=1e-5)


def test_without_affine_parameters_and_running_statistics():
    x, *_ = _inputs()
    grad = torch.randn_like(x)
    leaf = x.clone().requires_grad_()
    out = batch_norm_relu(leaf, None, None, None, None, 0.1, 1e-5)
    (dx,) = torch.autograd.grad(out, [leaf], grad)
    ref = _torch(x, None, None, None, None, grad)
    torch.testing.assert_close(out.double(), ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx.double(), ref[1], rtol=1e-5, atol=1e-5)
    _, dw, db = bn_relu_backward(grad, x, None, None, *bn_relu(x, None, None, None, None, 0.1, 1e-5)[1:])
    assert dw.numel() == db.numel() == 0


def test_runs_are_bitwise_deterministic():
    x, weight, bias, rm, rv = _inputs((2, 11, 6, 9), channels_last=True)
    grad = torch.randn_like(x)
    first, second = (_fused(x, weight, bias, rm, rv, grad, dict(block_c=4, block_p=8, splits=3))[0] for _ in range(2))
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_zero_stride_gradient_and_unmergeable_layout():
    """``out.sum()`` gives an expanded (stride 0) gradient; an H/W-transposed x is copied."""
    x, weight, bias, rm, rv = _inputs((2, 6, 4, 5))
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)
    leaves = [t.clone().requires_grad_() for t in (xt, weight, bias)]
    batch_norm_relu(*leaves, rm.clone(), rv.clone()).sum().backward()
    ref = _torch(x, weight, bias, rm, rv, torch.ones_like(x))
    for leaf, want in zip(leaves, ref[3:]):
        torch.testing.assert_close(leaf.grad.double(), want, rtol=1e-5, atol=1e-5)


def test_gradcheck_fp64_through_triton():
    x, weight, bias, _, _ = (t.double() if t is not None else None for t in _inputs((2, 3, 2, 3), running=False))
    leaves = tuple(t.requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(lambda *a: batch_norm_relu(*a, None, None, 0.1, 1e-5), leaves, fast_mode=True)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_opcheck_forward_and_backward_ops(channels_last):
    x, weight, bias, rm, rv = _inputs((2, 6, 3, 4), channels_last=channels_last)
    torch.library.opcheck(bn_relu, (x, weight, bias, rm, rv, 0.1, 1e-5))
    torch.library.opcheck(bn_relu, (x, None, None, None, None, 0.1, 1e-5))
    _, mean, invstd = bn_relu(x, weight, bias, None, None, 0.1, 1e-5)
    torch.library.opcheck(bn_relu_backward, (torch.randn_like(x), x, weight, bias, mean, invstd))


def test_compiled_fullgraph_matches_eager_and_updates_the_running_statistics():
    x, weight, bias, rm, rv = _inputs((2, 5, 3, 4))
    before = rm.clone()
    eager_rm, eager_rv, eager_x = rm.clone(), rv.clone(), x.clone().requires_grad_()
    want = batch_norm_relu(eager_x, weight, bias, eager_rm, eager_rv, 0.1, 1e-5)
    want.sum().backward()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(batch_norm_relu, fullgraph=True, backend=counter)
    leaf = x.clone().requires_grad_()
    got = compiled(leaf, weight, bias, rm, rv, 0.1, 1e-5)
    got.sum().backward()
    assert counter.frame_count == 1
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(leaf.grad, eager_x.grad)
    torch.testing.assert_close(rm, eager_rm)
    torch.testing.assert_close(rv, eager_rv)
    assert not torch.equal(rm, before)
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.__setitem__(0, a[0][0]), "x must be"),
        (lambda a: a.__setitem__(1, torch.randn(5)), "weight must be"),
        (lambda a: a.__setitem__(4, None), "both be given"),
        (lambda a: a.__setitem__(0, a[0].int()), "x must be fp16"),
        (lambda a: a.__setitem__(2, a[2].to("meta")), "bias is on meta but x is on cpu"),
        (lambda a: a.__setitem__(0, torch.randn(1, 6, 1, 1)), "more than 1 value per channel"),
    ],
)
def test_invalid_inputs_raise_naming_the_argument(change, match):
    args = list(_inputs((2, 6, 3, 4)))
    change(args)
    with pytest.raises((ValueError, TypeError), match=match):
        bn_relu(*args, 0.1, 1e-5)


# --------------------------------------------------------------------------- the module
def _pair(c=7, **kwargs):
    """``(fused, Sequential(BatchNorm2d, ReLU))`` with the same non-trivial state."""
    ref = nn.Sequential(nn.BatchNorm2d(c, **kwargs), nn.ReLU(inplace=True))
    with torch.no_grad():
        for t in ref[0].parameters():
            t.normal_(0.5, 0.5)
        if ref[0].running_mean is not None:
            ref[0].running_mean.normal_(0, 0.1), ref[0].running_var.uniform_(0.5, 1.5)
    fused = FusedBatchNormReLU(c, **kwargs)
    fused.load_state_dict(ref[0].state_dict())
    return fused, ref


@pytest.mark.parametrize("kwargs", [{}, dict(momentum=None), dict(track_running_stats=False), dict(affine=False)],
                         ids=["default", "cumulative", "untracked", "no-affine"])
def test_module_trains_and_evaluates_like_batchnorm_relu(kwargs):
    fused, ref = _pair(**kwargs)
    assert list(fused.state_dict()) == list(ref[0].state_dict())
    for training, steps in ((True, 2), (False, 1)):
        fused.train(training), ref.train(training)
        for _ in range(steps):
            x = torch.randn(3, 7, 4, 5).contiguous(memory_format=torch.channels_last) * 2 + 1
            outs, grads = [], []
            for m in (fused, ref):
                xi = x.clone().requires_grad_()
                out = m(xi)
                outs.append(out)
                grads.append(torch.autograd.grad(out, [xi, *m.parameters()], torch.linspace(-1, 1, out.numel()).view_as(out)))
            torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
            assert outs[0].is_contiguous(memory_format=torch.channels_last)
            for a, b in zip(*grads):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            for (name, a), b in zip(fused.state_dict().items(), ref[0].state_dict().values()):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)
    assert fused.fuses_relu and not isinstance(fused, nn.modules.batchnorm._BatchNorm)


def test_module_runs_the_op_only_with_batch_statistics(monkeypatch):
    real, calls = bn_mod.bn_relu_forward_triton, []

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(bn_mod.launch, "bn_relu_forward_triton", spy)  # where the op looks it up
    fused, _ = _pair()
    x = torch.randn(2, 7, 3, 3)
    fused(x)
    assert len(calls) == 1
    fused.eval()(x)
    assert len(calls) == 1  # running statistics: F.batch_norm + relu
    monkeypatch.setenv("FASTMTL_KERNELS", "reference")
    fused.train()(x)
    assert len(calls) == 1


def test_module_under_compile_is_plain_batch_norm_and_relu():
    """Under torch.compile the module is F.batch_norm + relu (Inductor fuses it with its neighbours)."""
    fused, ref = _pair()
    x = torch.randn(2, 7, 3, 4)
    explanation = torch._dynamo.explain(copy.deepcopy(fused))(x)  # (explain runs it: a step of statistics)
    ops = {str(n.target) for g in explanation.graphs for n in g.graph.nodes}
    assert explanation.graph_break_count == 0 and not any("fastmtl" in op for op in ops)
    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), ref(x))
    torch.testing.assert_close(fused.running_var, ref[0].running_var)
    torch._dynamo.reset()


def test_module_refuses_what_batchnorm2d_refuses():
    fused, _ = _pair()
    with pytest.raises(ValueError, match="expected 4D input"):
        fused(torch.randn(2, 7, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fused(torch.randn(1, 7, 1, 1))
