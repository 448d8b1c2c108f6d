"""fastmtl::se_scale (Triton through the interpreter) against layers.SqueezeExcitation."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import fastmtl.kernels.se_scale as se_mod
from fastmtl.kernels._utils import merge_hw
from fastmtl.kernels.se_scale import se_scale, se_scale_backward
from fastmtl import layers
from fastmtl.nn import FusedSqueezeExcitation

C, CR, N, H, W = 37, 4, 2, 5, 7  # C, H*W not multiples of any block


pytestmark = pytest.mark.usefixtures("triton_mode")  # kernels through Triton (interpreter on CPU)


def _reference(x, w1, b1, w2, b2, identity=None):
    """layers.SqueezeExcitation with the given weights (+ the BasicBlock tail)."""
    ref = layers.SqueezeExcitation(w1.shape[1], reduction=1)
    params = {"fc1.weight": w1.reshape(*w1.shape[:2], 1, 1), "fc1.bias": b1, "fc2.weight": w2.reshape(*w2.shape[:2], 1, 1), "fc2.bias": b2}
    y = torch.func.functional_call(ref, params, (x,))
    return y if identity is None else F.relu(y + identity)


def _inputs(dtype=torch.float32, channels_last=False, identity=True, c=C, cr=CR, n=N, h=H, w=W):
    x = torch.randn(n, c, h, w, dtype=dtype)
    ident = torch.randn(n, c, h, w, dtype=dtype) if identity else None
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        ident = ident.to(memory_format=torch.channels_last) if identity else None
    # gates well away from 0.5 and hidden units of both signs
    w1, b1 = torch.randn(cr, c, 1, 1, dtype=dtype), torch.randn(cr, dtype=dtype)
    w2, b2 = torch.randn(c, cr, 1, 1, dtype=dtype) * 0.5, torch.randn(c, dtype=dtype)
    return [x, w1, b1, w2, b2, ident]


def _fwd_bwd(fn, inputs, grad_out=None):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in inputs]
    out = fn(*leaves)
    grad_out = torch.randn_like(out) if grad_out is None else grad_out
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out)
    return out.detach(), list(grads), grad_out


def _to(inputs, dtype):
    return [t.to(dtype) if t is not None else None for t in inputs]


@pytest.mark.parametrize("identity", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_and_every_gradient_match_reference(dtype, channels_last, identity):
    inputs = _inputs(dtype, channels_last, identity)
    out, grads, g = _fwd_bwd(se_scale, inputs)
    ref_out, ref_grads, _ = _fwd_bwd(_reference, _to(inputs, torch.float64), g.double())
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(out.double(), ref_out, **tol)
    assert len(grads) == len(ref_grads) == (6 if identity else 5)
    for got, want, t in zip(grads, ref_grads, [x for x in inputs if x is not None]):
        assert got.shape == t.shape and got.dtype == t.dtype
        torch.testing.assert_close(got.double(), want, **tol)


@pytest.mark.parametrize("identity", [False, True], ids=["plain", "residual"])
def test_gradcheck_fp64_through_triton(identity):
    inputs = [t.requires_grad_() if t is not None else None for t in _inputs(torch.float64, False, identity, c=4, cr=2, n=2, h=2, w=3)]
    assert torch.autograd.gradcheck(se_scale, tuple(inputs))


def test_two_dim_weights_give_same_result_and_grad_shapes():
    x, w1, b1, w2, b2, ident = _inputs()
    out4, g4, g = _fwd_bwd(se_scale, [x, w1, b1, w2, b2, ident])
    out2, g2, _ = _fwd_bwd(se_scale, [x, w1.flatten(1), b1, w2.flatten(1), b2, ident], g)
    torch.testing.assert_close(out2, out4)
    assert g2[1].shape == (CR, C) and g2[3].shape == (C, CR)
    for a, b in zip(g2, g4):
        torch.testing.assert_close(a.reshape(b.shape), b)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_small_blocks_many_chunks_into_poisoned_buffers(channels_last):
    """Several channel blocks, pixel blocks and reduction chunks; NaN-filled outputs."""
    x, w1, b1, w2, b2, ident = _inputs(torch.float64, channels_last, c=37, h=9, w=13)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    blocks = dict(block_c=8, block_hw=16, chunks=3)
    poison = lambda: torch.full_like(x, float("nan"), memory_format=fmt)  # noqa: E731
    out = se_mod.se_scale_forward_triton(x, w1, b1, w2, b2, ident, out=poison(), **blocks)
    torch.testing.assert_close(out, _reference(x, w1, b1, w2, b2, ident))
    g = torch.randn_like(x)
    dx, di, *dws = se_mod.se_scale_backward_triton(g, x, out, w1, b1, w2, b2, dx=poison(), d_identity=poison(), **blocks)
    _, want, _ = _fwd_bwd(_reference, [x, w1, b1, w2, b2, ident], g)
    for got, exp in zip([dx, *dws, di], want):
        torch.testing.assert_close(got, exp)


def test_backward_with_zero_stride_gradient_and_unmergeable_layout():
    """``out.sum()`` gives an expanded (stride 0) gradient; an H/W-transposed x is copied."""
    x, w1, b1, w2, b2, ident = _inputs(torch.float64)
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, H/W strides swapped
    assert merge_hw(xt)[0] is not xt
    leaves = [t.clone().requires_grad_() for t in (xt, w1, b1, w2, b2, ident)]
    se_scale(*leaves).sum().backward()
    _, want, _ = _fwd_bwd(_reference, [x, w1, b1, w2, b2, ident], torch.ones_like(x))
    for leaf, exp in zip(leaves, want):
        torch.testing.assert_close(leaf.grad, exp)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_error_at_most_twice_torch_same_dtype(dtype):
    """max|fused - ref64| <= 2 max|torch_same_dtype - ref64| + atol, output and every grad."""
    inputs = _to(_inputs(torch.float64), dtype)
    out, grads, g = _fwd_bwd(se_scale, inputs)
    same_out, same_grads, _ = _fwd_bwd(_reference, inputs, g)
    ref_out, ref_grads, _ = _fwd_bwd(_reference, _to(inputs, torch.float64), g.double())
    atol = 1e-3 if dtype == torch.float16 else 1e-2
    for got, same, ref in zip([out, *grads], [same_out, *same_grads], [ref_out, *ref_grads]):
        assert got.dtype == dtype
        err, err_same = (got.double() - ref).abs().max(), (same.double() - ref).abs().max()
        assert err <= 2 * err_same + atol * ref.abs().max().clamp_min(1)


def test_half_activations_with_fp32_weights_as_under_autocast():
    x, w1, b1, w2, b2, ident = _inputs()
    out = se_scale(x.bfloat16(), w1, b1, w2, b2, ident.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _reference(x, w1, b1, w2, b2, ident), rtol=2e-2, atol=2e-2)


def test_outputs_never_alias_inputs():
    inputs = _inputs()
    out = se_scale(*inputs)
    assert all(out.data_ptr() != t.data_ptr() for t in inputs if t is not None)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.__setitem__(1, torch.randn(CR, C + 1, 1, 1)), "w1 must be"),
        (lambda a: a.__setitem__(3, torch.randn(C, CR + 1)), "w2 must be"),
        (lambda a: a.__setitem__(2, torch.randn(CR + 1)), "b1 must be"),
        (lambda a: a.__setitem__(4, torch.randn(C - 1)), "b2 must be"),
        (lambda a: a.__setitem__(5, torch.randn(N, C, H, W + 1)), "identity must have"),
        (lambda a: a.__setitem__(5, a[5].double()), "identity is torch.float64 but x"),
        (lambda a: a.__setitem__(2, a[2].double()), "b1 is torch.float64 but w1"),
        (lambda a: a.__setitem__(0, a[0].int()), "x must be fp16"),
        (lambda a: a.__setitem__(0, a[0][0]), "x must be"),
        (lambda a: a.__setitem__(4, a[4].to("meta")), "b2 is on meta but x is on cpu"),
    ],
)
def test_invalid_inputs_raise_naming_the_argument(change, match):
    args = _inputs()
    change(args)
    with pytest.raises((ValueError, TypeError), match=match):
        se_scale(*args)


@pytest.mark.parametrize("identity", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_opcheck_forward_and_backward_ops(channels_last, identity):
    args = _inputs(torch.float32, channels_last, identity, c=6, cr=2, h=3, w=4)
    leaves = [t.requires_grad_() if t is not None else None for t in args]
    torch.library.opcheck(se_scale, tuple(leaves))
    x, w1, b1, w2, b2, ident = [t.detach() if t is not None else None for t in leaves]
    out = se_scale(x, w1, b1, w2, b2, ident) if identity else None
    torch.library.opcheck(se_scale_backward, (torch.randn_like(x), x, out, w1, b1, w2, b2))


@pytest.mark.parametrize("mode", ["triton", "reference"])
def test_module_matches_the_reference_both_ways_and_fuses_the_tail(monkeypatch, mode):
    monkeypatch.setenv("FASTMTL_KERNELS", mode)
    ref, fused = layers.SqueezeExcitation(C, reduction=8), FusedSqueezeExcitation(C, reduction=8)
    assert list(fused.state_dict()) == list(ref.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    fused.load_state_dict(ref.state_dict())
    x, ident = torch.randn(N, C, H, W), torch.randn(N, C, H, W)
    torch.testing.assert_close(fused(x), ref(x))
    torch.testing.assert_close(fused(x, identity=ident), F.relu(ref(x) + ident))
    torch.testing.assert_close(fused.scale(x), ref.scale(x))
    ref2 = layers.SqueezeExcitation(C, reduction=8)
    ref2.load_state_dict(fused.state_dict())
    torch.testing.assert_close(ref2(x), fused(x))
    assert fused.fuses_residual


def test_flop_counter_counts_the_fused_module_like_the_reference():
    ref = layers.SqueezeExcitation(C, reduction=8)
    fused = FusedSqueezeExcitation(C, reduction=8)
    fused.load_state_dict(ref.state_dict())
    counts = []
    for module in (ref, fused):
        x = torch.randn(N, C, H, W, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            module(x).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == 3 * 2 * 2 * N * C * (C // 8)


_ACTS = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu, "hardswish": F.hardswish}
_GATES = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}


def _se_family(act, gate):
    """An SE block written independently of the op: 1x1 convs on the pooled map, any activation
    and gate, biases optional, + the residual tail."""
    def fn(x, w1, b1, w2, b2, identity=None):
        s = x.mean(dim=(2, 3), keepdim=True)
        y = x * _GATES[gate](F.conv2d(_ACTS[act](F.conv2d(s, w1, b1)), w2, b2))
        return y if identity is None else F.relu(y + identity)
    return fn


@pytest.mark.parametrize("gate", list(_GATES))
@pytest.mark.parametrize("act", list(_ACTS))
def test_every_activation_and_gate_matches_an_independent_block(act, gate):
    """Pre-activations spread over the kinks of hardswish (+-3) and hardsigmoid (+-3)."""
    x, w1, b1, w2, b2, ident = _inputs(torch.float64, channels_last=act == "silu")
    w1, w2 = w1 * 3, w2 * 4
    op = lambda *t: se_scale(*t, act=act, gate=gate)  # noqa: E731
    out, grads, g = _fwd_bwd(op, [x, w1, b1, w2, b2, ident])
    ref_out, ref_grads, _ = _fwd_bwd(_se_family(act, gate), [x, w1, b1, w2, b2, ident], g)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    # torch's own fp64 hardsigmoid backward is off by ~1e-7 relative (its 1/6 is not fp64-exact)
    tol = 1e-6 if gate == "hardsigmoid" else 1e-9
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("which", ["no_b1", "no_b2", "no_biases"])
def test_missing_biases(which):
    x, w1, b1, w2, b2, ident = _inputs(torch.float64)
    b1 = None if which in ("no_b1", "no_biases") else b1
    b2 = None if which in ("no_b2", "no_biases") else b2
    leaves = [t for t in (x, w1, b1, w2, b2, ident) if t is not None]
    args = [x, w1, b1, w2, b2, ident]
    out, grads, g = _fwd_bwd(se_scale, args)
    ref_out, ref_grads, _ = _fwd_bwd(_se_family("relu", "sigmoid"), args, g)
    torch.testing.assert_close(out, ref_out)
    assert len(grads) == len(leaves)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    torch.library.opcheck(se_scale_backward, (g, x, se_scale(x, w1, b1, w2, b2, ident), w1, b1, w2, b2, "silu", "hardsigmoid"))


def test_unknown_activation_or_gate_is_a_clear_error():
    x, w1, b1, w2, b2, _ = _inputs()
    with pytest.raises(ValueError, match="act must be one of relu, silu, gelu, hardswish"):
        se_scale(x, w1, b1, w2, b2, act="tanh")
    with pytest.raises(ValueError, match="gate must be one of sigmoid, hardsigmoid"):
        se_scale(x, w1, b1, w2, b2, gate="softmax")
