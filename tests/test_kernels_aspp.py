"""Fused ASPP projection (``fastmtl::aspp_project``) and the fused ``fastmtl.nn.FusedASPP``.

On CPU the Triton kernels run through the interpreter (``TRITON_INTERPRET=1``, set by
conftest) with ``FASTMTL_KERNELS=triton``; shapes are tiny and odd (C and H*W not multiples
of any block). The GPU checks live in test_kernels_cuda.py with those of the other ops.
"""
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fastmtl.kernels import aspp as K
from fastmtl.kernels.aspp import launch as aspp_launch, reference as aspp_reference
from fastmtl.kernels._utils import cdiv
from fastmtl.kernels.dispatch import interpreter_enabled
from fastmtl import layers
from fastmtl.nn.aspp import FusedASPP

needs_kernels = pytest.mark.skipif(not (interpreter_enabled() or torch.cuda.is_available()),
                                   reason="needs TRITON_INTERPRET=1 or CUDA")


@pytest.fixture(autouse=True)
def _triton_mode(monkeypatch):
    """Triton kernels everywhere, and every buffer the launchers allocate starts as NaN."""
    monkeypatch.setenv("FASTMTL_KERNELS", "triton")
    real_empty = aspp_launch._empty

    def poisoned(shape, dtype, device, channels_last=False):
        return real_empty(shape, dtype, device, channels_last).fill_(float("nan"))

    monkeypatch.setattr(aspp_launch, "_empty", poisoned)


def _layout(t, channels_last):
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()


def _close(actual, expected, atol, rtol, what=""):
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")


# ----------------------------------------------------------------------------- module vs layers.ASPP
def _modules(in_ch=13, out_ch=11, rates=(1, 2, 3), dropout=0.0):
    """(reference, fused) with identical, non-trivial BatchNorm parameters and statistics."""
    ref = layers.ASPP(in_ch, out_ch, rates, dropout)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    fused = FusedASPP(in_ch, out_ch, rates, dropout)
    fused.load_state_dict(ref.state_dict())
    return ref, fused


def _run(module, x, grad):
    x = x.clone().requires_grad_(True)
    y = module(x)
    y.backward(grad)
    return y, x.grad


def _compare_modules(ref, fused, x, atol, rtol):
    grad = torch.randn(x.shape[0], ref.project[0].out_channels, *x.shape[2:], device=x.device)
    y_ref, gx_ref = _run(ref, x, grad)
    y, gx = _run(fused, x, grad)
    _close(y, y_ref, atol, rtol, "output")
    # the fused output keeps the input's layout (the reference's concat falls back to NCHW)
    assert y.is_contiguous(memory_format=torch.channels_last) == aspp_reference._is_channels_last(x)
    _close(gx, gx_ref, atol, rtol, "grad x")
    ref_params = dict(ref.named_parameters())
    for name, p in fused.named_parameters():
        _close(p.grad, ref_params[name].grad, atol, rtol, f"grad {name}")
    ref_buffers = dict(ref.named_buffers())
    for name, b in fused.named_buffers():
        _close(b, ref_buffers[name], atol, rtol, f"buffer {name}")


def test_state_dict_round_trip():
    ref, fused = _modules()
    assert list(ref.state_dict()) == list(fused.state_dict())
    back = layers.ASPP(13, 11, (1, 2, 3))
    back.load_state_dict(fused.state_dict())
    for (name, a), b in zip(back.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name


@needs_kernels
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("rates", [(1, 2, 3), (1, 2, 3, 4)], ids=["4branches", "5branches"])
def test_module_train_matches_reference(channels_last, rates):
    ref, fused = _modules(rates=rates)
    ref.train(), fused.train()
    x = _layout(torch.randn(2, 13, 5, 7), channels_last)
    _compare_modules(ref, fused, x, atol=1e-5, rtol=1e-4)  # includes running stats, num_batches_tracked


@needs_kernels
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_module_eval_matches_reference(channels_last):
    ref, fused = _modules(rates=(1, 2, 6))
    ref.eval(), fused.eval()
    x = _layout(torch.randn(2, 13, 5, 7), channels_last)
    _compare_modules(ref, fused, x, atol=1e-5, rtol=1e-4)  # includes the projection BN's affine grads


@needs_kernels
def test_module_dropout_runs():
    ref, fused = _modules(dropout=0.5)
    x = torch.randn(2, 13, 5, 7)
    ref.eval(), fused.eval()  # dropout is the identity in eval mode
    with torch.no_grad():
        _close(fused(x), ref(x), 1e-5, 1e-4, "eval output")
    fused.train()
    y = fused(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and (y == 0).any()
    assert all(p.grad is not None for p in fused.parameters())


def test_module_reference_mode_is_the_reference(monkeypatch):
    monkeypatch.setenv("FASTMTL_KERNELS", "reference")
    ref, fused = _modules()
    x = torch.randn(2, 13, 5, 7)
    for train in (True, False):
        ref.train(train), fused.train(train)
        assert torch.equal(fused(x), ref(x))


@needs_kernels
def test_module_dynamo_no_graph_breaks():
    _, fused = _modules()
    x = torch.randn(2, 13, 5, 7)
    for train in (True, False):
        fused.train(train)
        explanation = torch._dynamo.explain(fused)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons


@needs_kernels
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_module_compile_matches_eager(train):
    torch._dynamo.reset()
    _, eager = _modules()
    compiled = FusedASPP(13, 11, (1, 2, 3))
    compiled.load_state_dict(eager.state_dict())
    eager.train(train), compiled.train(train)
    x = torch.randn(2, 13, 5, 7)
    grad = torch.randn(2, 11, 5, 7)
    y, gx = _run(eager, x, grad)
    y_c, gx_c = _run(torch.compile(compiled, fullgraph=True, backend="aot_eager"), x, grad)
    _close(y_c, y, 1e-6, 1e-5, "output")
    _close(gx_c, gx, 1e-6, 1e-5, "grad x")
    for (name, p), p_c in zip(eager.named_parameters(), compiled.parameters()):
        _close(p_c.grad, p.grad, 1e-6, 1e-5, f"grad {name}")


# ----------------------------------------------------------------------------- the op
def _op_inputs(n=2, cb=13, cout=11, h=5, w=7, k=4, dtype=torch.float32, channels_last=False,
               affine=True, requires_grad=True):
    branches = [_layout(torch.randn(n, cb, h, w, dtype=dtype), channels_last) for _ in range(k)]
    weight = (torch.randn(cout, 2 * k * cb, dtype=dtype) / (k * cb) ** 0.5)[:, ::2]  # strided view
    bias = torch.randn(n, cout, dtype=dtype)
    scale = (torch.rand(cout, dtype=dtype) + 0.5) if affine else None
    shift = torch.randn(cout, dtype=dtype) if affine else None
    tensors = [*branches, weight, bias] + ([scale, shift] if affine else [])
    for t in tensors:
        t.requires_grad_(requires_grad)
    return branches, weight, bias, scale, shift


def _leaves(branches, weight, bias, scale, shift):
    return [t for t in (*branches, weight, bias, scale, shift) if t is not None]


def _detached(inputs, dtype):
    branches, weight, bias, scale, shift = inputs
    cast = lambda t: None if t is None else t.detach().to(dtype).requires_grad_(True)  # noqa: E731
    return [cast(b) for b in branches], cast(weight), cast(bias), cast(scale), cast(shift)


def _forward_backward(fn, inputs, relu, grad):
    out = fn(*inputs, relu=relu)
    leaves = _leaves(*inputs)
    grads = torch.autograd.grad(out, leaves, grad)
    return [out, *grads]


@needs_kernels
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "mixed"])
@pytest.mark.parametrize("affine,relu", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("k", [4, 5])
def test_op_matches_reference(layout, affine, relu, k):
    inputs = _op_inputs(k=k, channels_last=layout != "nchw", affine=affine)
    if layout == "mixed":  # branches with different strides, one that cannot flatten H*W
        branches = inputs[0]
        branches[1] = branches[1].contiguous()
        branches[2] = branches[2].detach().transpose(2, 3).contiguous().transpose(2, 3).requires_grad_(True)
    grad = torch.randn(2, 11, 5, 7)
    got = _forward_backward(K.aspp_project, inputs, relu, grad)
    expected = _forward_backward(K.aspp_project_reference, _detached(inputs, torch.float64), relu, grad.double())
    assert got[0].is_contiguous(memory_format=torch.channels_last) == (layout != "nchw")
    for i, (a, b) in enumerate(zip(got, expected)):
        _close(a, b, 1e-5, 1e-4, f"result {i}")


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_op_low_precision(dtype):
    """|fused - ref64| <= 2 |torch same dtype - ref64| + atol, for the output and every gradient.

    Under the interpreter bf16 runs the kernels' tl.sum product path (its bf16 tl.dot is wrong);
    the bf16 tl.dot path is covered by the CUDA test.
    """
    inputs = _detached(_op_inputs(), dtype)
    grad = torch.randn(2, 11, 5, 7).to(dtype)
    got = _forward_backward(K.aspp_project, inputs, True, grad)
    same = _forward_backward(K.aspp_project_reference, inputs, True, grad)
    ref64 = _forward_backward(K.aspp_project_reference, _detached(inputs, torch.float64), True, grad.double())
    eps = torch.finfo(dtype).eps
    for i, (a, s, r) in enumerate(zip(got, same, ref64)):
        assert a.dtype == s.dtype and torch.isfinite(a).all(), i
        err, err_torch = (a.double() - r).abs(), (s.double() - r).abs()
        bound = 2 * err_torch + 4 * eps * r.abs().max()
        assert (err <= bound).all(), f"result {i}: worst excess {(err - bound).max().item():.3g}"
        # torch's CPU bf16 convs are far off (up to ~0.4 relative), so also bound the error directly
        assert err.max() <= 4 * eps * r.abs().max(), f"result {i}"


@needs_kernels
def test_op_gradcheck_fp64():
    inputs = _op_inputs(n=2, cb=3, cout=5, h=2, w=3, dtype=torch.float64)
    branches, weight, bias, scale, shift = inputs

    def fn(*args):
        return K.aspp_project(list(args[:4]), *args[4:], relu=True)

    # fast mode (random projections of the Jacobian): the full Jacobian takes ~15 s in the interpreter
    assert torch.autograd.gradcheck(fn, (*branches, weight, bias, scale, shift), fast_mode=True)


@needs_kernels
@pytest.mark.filterwarnings("ignore:Input #")
def test_op_gradcheck_fp32():
    inputs = _op_inputs(n=2, cb=3, cout=5, h=2, w=3, channels_last=True)
    branches, weight, bias, scale, shift = inputs

    def fn(*args):
        return K.aspp_project(list(args[:4]), *args[4:], relu=True)

    assert torch.autograd.gradcheck(fn, (*branches, weight, bias, scale, shift), eps=1e-3, atol=1e-2, rtol=1e-2,
                                    fast_mode=True)


@needs_kernels
def test_opcheck_forward():
    for channels_last, affine, k in [(False, True, 4), (True, False, 5)]:
        branches, weight, bias, scale, shift = _op_inputs(n=2, cb=3, cout=5, h=2, w=3, k=k,
                                                          channels_last=channels_last, affine=affine)
        torch.library.opcheck(torch.ops.fastmtl.aspp_project.default, (branches, weight, bias, scale, shift, True))


@needs_kernels
def test_opcheck_backward():
    for channels_last, with_preact in [(False, True), (True, False)]:
        branches, weight, bias, scale, shift = _op_inputs(n=2, cb=3, cout=5, h=2, w=3, channels_last=channels_last,
                                                          requires_grad=False)
        out = K.aspp_project(branches, weight, bias, scale, shift, relu=True)
        preact = K.aspp_project(branches, weight, bias) if with_preact else None
        grad = torch.randn_like(out)
        torch.library.opcheck(torch.ops.fastmtl.aspp_project_backward.default,
                              (grad, out, branches, weight, bias, scale, preact, True))


@needs_kernels
def test_flop_formulas():
    branches, weight, bias, scale, shift = _op_inputs(n=2, cb=3, cout=5, h=2, w=3)
    with FlopCounterMode(display=False) as counter:
        out = K.aspp_project(branches, weight, bias, scale, shift, relu=True)
        out.backward(torch.ones_like(out))
    counts = {str(op): c for op, c in counter.get_flop_counts()["Global"].items()}
    gemm = 2 * 2 * 2 * 3 * (4 * 3) * 5
    assert counts["fastmtl.aspp_project"] == 2 * gemm  # forward + the preact recompute for scale
    assert counts["fastmtl.aspp_project_backward"] == 2 * gemm


@needs_kernels
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_op_backward_many_tiles(affine):
    """Several row, pixel and split tiles per launch (the tiny cases above fit one of each) and two
    branch groups (k=5 > 4 pointers per launch): outputs and every gradient against fp64."""
    n, cb, cout, h, w, k = 2, 70, 20, 9, 9, 5
    blocks = aspp_launch._backward_blocks(torch.float32, torch.device("cpu"), cout, cb, h * w, n * h * w)
    assert cdiv(cb, blocks[0]["BLOCK_M"]) > 1 and cdiv(h * w, blocks[0]["BLOCK_P"]) > 1
    inputs = _op_inputs(n=n, cb=cb, cout=cout, h=h, w=w, k=k, affine=affine)
    grad = torch.randn(n, cout, h, w)
    got = _forward_backward(K.aspp_project, inputs, True, grad)
    expected = _forward_backward(K.aspp_project_reference, _detached(inputs, torch.float64), True, grad.double())
    for i, (a, b) in enumerate(zip(got, expected)):
        _close(a, b, 1e-4, 1e-4, f"result {i}")
