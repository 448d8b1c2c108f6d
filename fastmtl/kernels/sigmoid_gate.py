"""Sigmoid gate: ``out = f * sigmoid(a)`` or ``out = r + f * sigmoid(a)``.

The spatial attention of the task-distillation model (``conv(x) * sigmoid(attention(x))``
plus the other task's features) in one pass over memory.

Shapes and layouts: ``f``, ``a``, ``r`` are ``(N, C, H, W)`` with any strides whose H and W
dims merge into one strided dim: NCHW-contiguous, channels_last, and channel slices of either
-- so ``f`` and ``a`` can be the two halves ``y[:, :C]``, ``y[:, C:]`` of one ``2C``-channel
convolution output without a copy. Other layouts are copied to NCHW first. The output (and
``df``, ``da``) is channels_last when ``f``'s channels are its innermost dim, else
NCHW-contiguous. ``f``, ``a``, ``r`` share one dtype (fp16/bf16/fp32/fp64); the math runs in
fp32 (fp64 for fp64 inputs).

Backward: ``df = g * sigmoid(a)``, ``da = g * f * sigmoid(a) * (1 - sigmoid(a))``, ``dr = g``
(returned as is by the autograd formula, not by the backward op).

``sigmoid_gate_halves(y, r=None)`` is the same gate on the halves ``f = y[:, :C]``,
``a = y[:, C:]`` of one ``(N, 2C, H, W)`` tensor, taken inside the op: its backward
(``sigmoid_gate_halves_backward``) writes ``dy`` as ONE tensor in ``y``'s layout, ``df`` and
``da`` into its two halves. With ``sigmoid_gate`` on two views instead, autograd assembles
``dy`` from two ``slice_backward`` zero-filled, NCHW-contiguous, full-size buffers and an add --
three more passes over ``dy``, and an NCHW gradient for a channels_last convolution's backward.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._utils import (
    check_floating, check_same_device, compute_dtype, empty_out, merge_hw, on_input_device,
    out_memory_format, tile_grid, tl_dtype,
)
from .dispatch import HAS_TRITON, use_triton
from .selfcheck import Probe, passes, randn

if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._utils import program_tile

    @triton.jit
    def _gate_fwd_kernel(
        F, A, R, OUT,
        C, HW,
        sfn, sfc, sfhw, san, sac, sahw, srn, src, srhw, son, soc, sohw,
        HAS_RES: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``OUT = F * sigmoid(A) (+ R)``. Grid ``(cdiv(HW, BLOCK_HW), cdiv(C, BLOCK_C), N)``."""
        n, c, hw = program_tile(BLOCK_C, BLOCK_HW)
        mask = (c < C)[:, None] & (hw < HW)[None, :]
        f = tl.load(F + n * sfn + c[:, None] * sfc + hw[None, :] * sfhw, mask=mask, other=0).to(ACC)
        a = tl.load(A + n * san + c[:, None] * sac + hw[None, :] * sahw, mask=mask, other=0).to(ACC)
        y = f * tl.sigmoid(a)
        if HAS_RES:
            y += tl.load(R + n * srn + c[:, None] * src + hw[None, :] * srhw, mask=mask, other=0).to(ACC)
        tl.store(OUT + n * son + c[:, None] * soc + hw[None, :] * sohw, y.to(OUT.dtype.element_ty), mask=mask)

    @triton.jit
    def _gate_bwd_kernel(
        G, F, A, DF, DA,
        C, HW,
        sgn, sgc, sghw, sfn, sfc, sfhw, san, sac, sahw, son, soc, sohw,
        ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``DF = G * s``, ``DA = G * F * s * (1 - s)`` with ``s = sigmoid(A)``; ``DF`` and
        ``DA`` share the strides ``so*``. Grid as the forward."""
        n, c, hw = program_tile(BLOCK_C, BLOCK_HW)
        mask = (c < C)[:, None] & (hw < HW)[None, :]
        g = tl.load(G + n * sgn + c[:, None] * sgc + hw[None, :] * sghw, mask=mask, other=0).to(ACC)
        f = tl.load(F + n * sfn + c[:, None] * sfc + hw[None, :] * sfhw, mask=mask, other=0).to(ACC)
        a = tl.load(A + n * san + c[:, None] * sac + hw[None, :] * sahw, mask=mask, other=0).to(ACC)
        s = tl.sigmoid(a)
        df = g * s
        da = df * f * (1 - s)
        dst = n * son + c[:, None] * soc + hw[None, :] * sohw
        tl.store(DF + dst, df.to(DF.dtype.element_ty), mask=mask)
        tl.store(DA + dst, da.to(DA.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- references
def sigmoid_gate_reference(f: Tensor, a: Tensor, r: Optional[Tensor] = None) -> Tensor:
    """Plain-PyTorch ``sigmoid_gate`` in the compute dtype; output in f's dtype and layout rule."""
    dt = compute_dtype(f)
    y = f.to(dt) * torch.sigmoid(a.to(dt))
    if r is not None:
        y = y + r.to(dt)
    return y.to(f.dtype).contiguous(memory_format=out_memory_format(f))


def sigmoid_gate_backward_reference(grad: Tensor, f: Tensor, a: Tensor) -> Tuple[Tensor, Tensor]:
    """Plain-PyTorch ``sigmoid_gate_backward``: ``(df, da)``."""
    dt = compute_dtype(f)
    fmt = out_memory_format(f)
    s = torch.sigmoid(a.to(dt))
    df = grad.to(dt) * s
    da = df * f.to(dt) * (1 - s)
    return df.to(f.dtype).contiguous(memory_format=fmt), da.to(f.dtype).contiguous(memory_format=fmt)



def sigmoid_gate_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`.selfcheck`): ``f``, ``a`` the channel halves of one
    tensor, plus a residual, at odd shapes; the output then ``(df, da)``."""
    y = randn((2, 22, 5, 7), gen, device, dtype, channels_last)
    r, grad = (randn((2, 11, 5, 7), gen, device, dtype, channels_last) for _ in range(2))

    def run(forward, backward):
        def both(y, r, grad):
            f, a = y[:, :11], y[:, 11:]
            return [forward(f, a, r), *backward(grad, f, a)]
        return both

    return Probe((y, r, grad), run(sigmoid_gate_forward_triton, sigmoid_gate_backward_triton),
                 run(sigmoid_gate_reference, sigmoid_gate_backward_reference))

# --------------------------------------------------------------------------- launchers
@on_input_device
def sigmoid_gate_forward_triton(
    f: Tensor, a: Tensor, r: Optional[Tensor] = None, *,
    out: Optional[Tensor] = None, block_c: Optional[int] = None, block_hw: Optional[int] = None,
) -> Tensor:
    """Triton ``sigmoid_gate``. ``out``: optional preallocated output (f's shape and dtype, H
    and W mergeable); ``block_c``/``block_hw`` override the tile heuristic."""
    n, c, h, w = f.shape
    out = empty_out(f) if out is None else out
    f, sf = merge_hw(f)
    a, sa = merge_hw(a)
    r_t, sr = merge_hw(r) if r is not None else (f, sf)
    _, so = merge_hw(out)
    grid, bc, bhw = tile_grid(out, so, block_c, block_hw)
    _gate_fwd_kernel[grid](
        f, a, r_t, out, c, h * w, *sf, *sa, *sr, *so,
        HAS_RES=r is not None, ACC=tl_dtype(compute_dtype(f)), BLOCK_C=bc, BLOCK_HW=bhw,
    )
    return out


@on_input_device
def sigmoid_gate_backward_triton(
    grad: Tensor, f: Tensor, a: Tensor, *,
    df: Optional[Tensor] = None, da: Optional[Tensor] = None,
    block_c: Optional[int] = None, block_hw: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """Triton ``sigmoid_gate_backward``; ``df``/``da``: optional preallocated outputs (same
    shape, dtype and strides as each other)."""
    n, c, h, w = f.shape
    df = empty_out(f) if df is None else df
    da = empty_out(f) if da is None else da
    grad, sg = merge_hw(grad)
    f, sf = merge_hw(f)
    a, sa = merge_hw(a)
    _, so = merge_hw(df)
    grid, bc, bhw = tile_grid(df, so, block_c, block_hw)
    _gate_bwd_kernel[grid](
        grad, f, a, df, da, c, h * w, *sg, *sf, *sa, *so,
        ACC=tl_dtype(compute_dtype(f)), BLOCK_C=bc, BLOCK_HW=bhw,
    )
    return df, da


# --------------------------------------------------------------------------- validation
def _check_inputs(f: Tensor, a: Tensor, r: Optional[Tensor]) -> None:
    op = "fastmtl.sigmoid_gate"
    check_floating(op, f=f, a=a, r=r)
    check_same_device(op, f=f, a=a, r=r)
    if f.dim() != 4:
        raise ValueError(f"{op}: f must be (N, C, H, W), got shape {tuple(f.shape)}")
    for name, t in (("a", a), ("r", r)):
        if t is None:
            continue
        if t.shape != f.shape:
            raise ValueError(f"{op}: {name} must have f's shape {tuple(f.shape)}, got {tuple(t.shape)}")
        if t.dtype != f.dtype:
            raise TypeError(f"{op}: {name} is {t.dtype} but f is {f.dtype}")


# --------------------------------------------------------------------------- torch.library
@torch.library.custom_op("fastmtl::sigmoid_gate", mutates_args=())
def sigmoid_gate(f: Tensor, a: Tensor, r: Optional[Tensor] = None) -> Tensor:
    """``f * sigmoid(a)`` or ``r + f * sigmoid(a)``; all ``(N, C, H, W)``, one dtype."""
    _check_inputs(f, a, r)
    if use_triton(f) and passes("sigmoid_gate", f):
        return sigmoid_gate_forward_triton(f, a, r)
    return sigmoid_gate_reference(f, a, r)


@sigmoid_gate.register_fake
def _sigmoid_gate_fake(f, a, r=None):
    _check_inputs(f, a, r)
    return empty_out(f)


@torch.library.custom_op("fastmtl::sigmoid_gate_backward", mutates_args=())
def sigmoid_gate_backward(grad: Tensor, f: Tensor, a: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradients ``(df, da)`` of :func:`sigmoid_gate` for the output gradient ``grad``."""
    if use_triton(grad) and passes("sigmoid_gate", f):
        return sigmoid_gate_backward_triton(grad, f, a)
    return sigmoid_gate_backward_reference(grad, f, a)


@sigmoid_gate_backward.register_fake
def _sigmoid_gate_backward_fake(grad, f, a):
    return empty_out(f), empty_out(f)


def _setup_context(ctx, inputs, output):
    f, a, r = inputs
    ctx.has_res = r is not None
    ctx.save_for_backward(f, a)


def _autograd(ctx, grad):
    f, a = ctx.saved_tensors
    df, da = sigmoid_gate_backward(grad, f, a)
    return df, da, (grad if ctx.has_res else None)


sigmoid_gate.register_autograd(_autograd, setup_context=_setup_context)


def _halves(y: Tensor) -> Tuple[Tensor, Tensor]:
    if y.dim() != 4 or y.shape[1] % 2:
        raise ValueError(f"fastmtl.sigmoid_gate_halves: y must be (N, 2C, H, W), got shape {tuple(y.shape)}")
    c = y.shape[1] // 2
    return y[:, :c], y[:, c:]


@torch.library.custom_op("fastmtl::sigmoid_gate_halves", mutates_args=())
def sigmoid_gate_halves(y: Tensor, r: Optional[Tensor] = None) -> Tensor:
    """:func:`sigmoid_gate` of the channel halves of ``y (N, 2C, H, W)``: ``f * sigmoid(a)`` (+ ``r``),
    ``(N, C, H, W)``."""
    f, a = _halves(y)
    _check_inputs(f, a, r)
    if use_triton(f) and passes("sigmoid_gate", f):
        return sigmoid_gate_forward_triton(f, a, r)
    return sigmoid_gate_reference(f, a, r)


@sigmoid_gate_halves.register_fake
def _sigmoid_gate_halves_fake(y, r=None):
    f, a = _halves(y)
    _check_inputs(f, a, r)
    return empty_out(f)


@torch.library.custom_op("fastmtl::sigmoid_gate_halves_backward", mutates_args=())
def sigmoid_gate_halves_backward(grad: Tensor, y: Tensor) -> Tensor:
    """``dy (N, 2C, H, W)`` of :func:`sigmoid_gate_halves` in ``y``'s layout: ``(df, da)`` in its halves."""
    f, a = _halves(y)
    if use_triton(grad) and passes("sigmoid_gate", f):
        dy = torch.empty_like(y)
        sigmoid_gate_backward_triton(grad, f, a, df=dy[:, :f.shape[1]], da=dy[:, f.shape[1]:])
        return dy
    return torch.cat(sigmoid_gate_backward_reference(grad, f, a), dim=1).contiguous(
        memory_format=out_memory_format(y))


@sigmoid_gate_halves_backward.register_fake
def _sigmoid_gate_halves_backward_fake(grad, y):
    return torch.empty_like(y)


def _halves_setup_context(ctx, inputs, output):
    y, r = inputs
    ctx.has_res = r is not None
    ctx.save_for_backward(y)


def _halves_autograd(ctx, grad):
    (y,) = ctx.saved_tensors
    return sigmoid_gate_halves_backward(grad, y), (grad if ctx.has_res else None)


sigmoid_gate_halves.register_autograd(_halves_autograd, setup_context=_halves_setup_context)
