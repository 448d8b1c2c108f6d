"""fastmtl::sigmoid_gate (Triton through the interpreter) and the fused SelfAttention."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fastmtl.kernels.sigmoid_gate as gate_mod
from fastmtl.kernels._utils import merge_hw
from fastmtl.kernels.sigmoid_gate import (
    sigmoid_gate, sigmoid_gate_backward, sigmoid_gate_halves, sigmoid_gate_halves_backward,
)
from fastmtl import layers
from fastmtl.nn import FusedSelfAttention

C, N, H, W = 37, 2, 5, 7


pytestmark = pytest.mark.usefixtures("triton_mode")  # kernels through Triton (interpreter on CPU)


def _reference(f, a, r=None):
    out = f * torch.sigmoid(a)
    return out if r is None else r + out


def _halves(dtype=torch.float32, channels_last=False, c=C, n=N, h=H, w=W):
    """``(y, f, a)``: f and a are the channel halves (views) of one 2c-channel tensor y."""
    y = torch.randn(n, 2 * c, h, w, dtype=dtype) * 2
    if channels_last:
        y = y.to(memory_format=torch.channels_last)
    return y, y[:, :c], y[:, c:]


def _fwd_bwd(fn, y, r, c, grad_out=None):
    """Runs ``fn(y[:, :c], y[:, c:], r)`` on fresh leaves; returns (out, dy, dr, grad_out)."""
    y = y.detach().clone().requires_grad_()
    r = r.detach().clone().requires_grad_() if r is not None else None
    out = fn(y[:, :c], y[:, c:], r)
    grad_out = torch.randn_like(out) if grad_out is None else grad_out
    grads = torch.autograd.grad(out, [y] + ([r] if r is not None else []), grad_out)
    return out.detach(), grads[0], (grads[1] if r is not None else None), grad_out


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_and_every_gradient_match_reference_on_channel_views(dtype, channels_last, residual):
    y, f, a = _halves(dtype, channels_last)
    assert merge_hw(f)[0] is f and merge_hw(a)[0] is a  # the views are read in place
    r = torch.randn(N, C, H, W, dtype=dtype) if residual else None
    out, dy, dr, g = _fwd_bwd(sigmoid_gate, y, r, C)
    ref, ref_dy, ref_dr, _ = _fwd_bwd(_reference, y.double(), r.double() if residual else None, C, g.double())
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    assert out.dtype == dtype and dy.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(out.double(), ref, **tol)
    torch.testing.assert_close(dy.double(), ref_dy, **tol)
    if residual:
        torch.testing.assert_close(dr.double(), ref_dr, **tol)


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_halves_op_matches_reference_and_returns_one_gradient_in_the_inputs_layout(dtype, channels_last, residual):
    y, _, _ = _halves(dtype, channels_last)
    r = torch.randn(N, C, H, W, dtype=dtype) if residual else None
    out, dy, dr, g = _fwd_bwd(lambda f, a, r: sigmoid_gate_halves(f._base if f._base is not None else f, r), y, r, C)
    ref, ref_dy, ref_dr, _ = _fwd_bwd(_reference, y.double(), r.double() if residual else None, C, g.double())
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.dtype == dtype and out.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(out.double(), ref, **tol)
    torch.testing.assert_close(dy.double(), ref_dy, **tol)
    if residual:
        torch.testing.assert_close(dr.double(), ref_dr, **tol)
    # the op's own backward: one (N, 2C, H, W) gradient in y's layout, the two halves filled
    own = sigmoid_gate_halves_backward(g, y)
    assert own.shape == y.shape and own.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(own.double(), ref_dy, **tol)


def test_halves_op_refuses_an_odd_channel_count():
    with pytest.raises(ValueError, match=r"y must be \(N, 2C, H, W\)"):
        sigmoid_gate_halves(torch.randn(2, 5, 3, 3))


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_gradcheck_fp64_through_triton(residual):
    f, a = (torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    r = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True) if residual else None
    assert torch.autograd.gradcheck(sigmoid_gate, (f, a, r))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_small_blocks_into_poisoned_buffers(channels_last):
    y, f, a = _halves(torch.float64, channels_last, h=9, w=13)
    r = torch.randn_like(f)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    poison = lambda: torch.full(f.shape, float("nan"), dtype=f.dtype).contiguous(memory_format=fmt)  # noqa: E731
    blocks = dict(block_c=8, block_hw=16)
    out = gate_mod.sigmoid_gate_forward_triton(f, a, r, out=poison(), **blocks)
    torch.testing.assert_close(out, _reference(f, a, r))
    g = torch.randn_like(out)
    df, da = gate_mod.sigmoid_gate_backward_triton(g, f, a, df=poison(), da=poison(), **blocks)
    s = torch.sigmoid(a)
    torch.testing.assert_close(df, g * s)
    torch.testing.assert_close(da, g * f * s * (1 - s))


def test_mixed_layouts_and_zero_stride_gradient():
    """NCHW f, channels_last a and r, an unmergeable residual, an expanded gradient."""
    f = torch.randn(N, C, H, W, dtype=torch.float64, requires_grad=True)
    a = torch.randn(N, C, H, W, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    r = torch.randn(N, C, W, H, dtype=torch.float64).transpose(2, 3).requires_grad_()
    sigmoid_gate(f, a, r).sum().backward()
    got = [t.grad for t in (f, a, r)]
    for t in (f, a, r):
        t.grad = None
    _reference(f, a, r).sum().backward()
    for g, t in zip(got, (f, a, r)):
        torch.testing.assert_close(g, t.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_error_at_most_twice_torch_same_dtype(dtype):
    """max|fused - ref64| <= 2 max|torch_same_dtype - ref64| + atol, output and every grad."""
    y, _, _ = _halves(dtype)
    r = torch.randn(N, C, H, W, dtype=dtype)
    out, dy, dr, g = _fwd_bwd(sigmoid_gate, y, r, C)
    same = _fwd_bwd(_reference, y, r, C, g)[:3]
    ref = _fwd_bwd(_reference, y.double(), r.double(), C, g.double())[:3]
    atol = 1e-3 if dtype == torch.float16 else 1e-2
    for got, s, want in zip((out, dy, dr), same, ref):
        assert got.dtype == dtype
        err, err_same = (got.double() - want).abs().max(), (s.double() - want).abs().max()
        assert err <= 2 * err_same + atol * want.abs().max().clamp_min(1)


def test_outputs_never_alias_inputs():
    y, f, a = _halves()
    r = torch.randn_like(f)
    out = sigmoid_gate(f, a, r)
    assert out.data_ptr() not in (y.data_ptr(), a.data_ptr(), r.data_ptr())


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 6)), "a must have f's shape"),
        ((torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4)), "r must have f's shape"),
        ((torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5).double()), "a is torch.float64 but f"),
        ((torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5).half()), "r is torch.float16"),
        ((torch.randn(3, 4, 5), torch.randn(3, 4, 5)), "f must be"),
        ((torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5, device="meta")), "a is on meta but f is on cpu"),
        ((torch.ones(2, 3, 4, 5, dtype=torch.int64), torch.randn(2, 3, 4, 5)), "f must be fp16"),
    ],
)
def test_invalid_inputs_raise_naming_the_argument(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sigmoid_gate(*args)


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_opcheck_forward_and_backward_ops(channels_last, residual):
    y, f, a = _halves(channels_last=channels_last, c=3, h=2, w=3)
    y.requires_grad_()
    f, a = y[:, :3], y[:, 3:]
    r = torch.randn(f.shape, requires_grad=True) if residual else None
    torch.library.opcheck(sigmoid_gate, (f, a, r))
    torch.library.opcheck(sigmoid_gate_backward, (torch.randn(f.shape), f.detach(), a.detach()))
    torch.library.opcheck(sigmoid_gate_halves, (y, r))
    torch.library.opcheck(sigmoid_gate_halves_backward, (torch.randn(f.shape), y.detach()))


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("mode", ["triton", "reference"])
def test_self_attention_matches_the_reference_both_ways(monkeypatch, mode, channels_last):
    monkeypatch.setenv("FASTMTL_KERNELS", mode)
    ref, fused = layers.SelfAttention(6, 5, "default"), FusedSelfAttention(6, 5)
    assert list(fused.state_dict()) == list(ref.state_dict()) == ["conv.weight", "attention.weight"]
    assert fused.attention.weight.abs().sum() == 0  # attention_init="zero" like the reference
    fused.load_state_dict(ref.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(N, 6, H, W).contiguous(memory_format=fmt).requires_grad_()
    residual = torch.randn(N, 5, H, W).contiguous(memory_format=fmt)
    for res in (None, residual):
        out = fused(x, res)
        want = ref(x, res)
        torch.testing.assert_close(out, want)
        assert out.is_contiguous(memory_format=fmt)
        g = torch.randn_like(want)
        got = torch.autograd.grad(out, [x, fused.conv.weight, fused.attention.weight], g)
        exp = torch.autograd.grad(want, [x, ref.conv.weight, ref.attention.weight], g)
        for p, q in zip(got, exp):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    ref2 = layers.SelfAttention(6, 5, "default")
    ref2.load_state_dict(fused.state_dict())
    torch.testing.assert_close(ref2(x), fused(x))


def test_self_attention_promotes_a_wider_residual_like_the_reference():
    ref, fused = layers.SelfAttention(4, 3, "default"), FusedSelfAttention(4, 3)
    fused.load_state_dict(ref.state_dict())
    x, residual = torch.randn(1, 4, 3, 3).bfloat16(), torch.randn(1, 3, 3, 3)
    ref, fused = ref.bfloat16(), fused.bfloat16()
    out = fused(x, residual)
    assert out.dtype == ref(x, residual).dtype == torch.float32
    torch.testing.assert_close(out, ref(x, residual), rtol=1e-2, atol=1e-2)


def test_flop_counter_counts_the_fused_attention_like_the_reference():
    ref, fused = layers.SelfAttention(6, 5, "default"), FusedSelfAttention(6, 5)
    counts = []
    for module in (ref, fused):
        with FlopCounterMode(display=False) as counter:
            module(torch.randn(N, 6, H, W, requires_grad=True)).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0
