"""Squeeze-and-excitation scale, optionally fused with the ResNet BasicBlock tail.

Math (per image ``n`` and channel ``c``)::

    s   = mean_hw(x)                          (N, C)
    u   = s @ W1.T + b1,  h = relu(u)         (N, Cr)
    g   = sigmoid(h @ W2.T + b2)              (N, C)
    y   = x * g[:, :, None, None]             (N, C, H, W)
    out = y            or   relu(y + identity)

Shapes and layouts: ``x`` and ``identity`` are ``(N, C, H, W)`` in any layout whose H and W
dims merge into one strided dim (NCHW-contiguous, channels_last, and channel slices of
either); other layouts are copied to NCHW first. ``w1`` is ``(Cr, C)`` or the 1x1 conv weight
``(Cr, C, 1, 1)``, ``b1`` ``(Cr,)``, ``w2`` ``(C, Cr)`` or ``(C, Cr, 1, 1)``, ``b2`` ``(C,)``.
The output is channels_last when ``x``'s channels are its innermost dim, else NCHW-contiguous.

Dtypes: ``x`` and ``identity`` share one dtype (fp16/bf16/fp32/fp64); the four weights share
one dtype that may differ from ``x``'s (autocast keeps fp32 weights with fp16 activations).
Everything is computed in fp32 (fp64 if any input is fp64) right after loading.

Triton path: kernel 1 reduces ``sum_hw(x)`` per (n, c) in fixed-order chunks (partial sums are
added by ``torch.sum``: deterministic, no atomics); the tiny FC runs in torch; kernel 2 applies
the gate (+ residual + ReLU). Backward: one reduction kernel gives ``sum_hw(dy * x)`` and
``sum_hw(x)`` per (n, c) (``dy`` already masked by the ReLU of the residual tail), the FC
backward runs in torch, one elementwise kernel writes ``dx`` (and ``d_identity``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from ._utils import (
    channels_inner, check_floating, check_same_device, compute_dtype, empty_out, merge_hw, on_input_device,
    out_memory_format, split_reduction, tile_grid, tile_shape, tl_dtype,
)
from .dispatch import HAS_TRITON, use_triton
from .selfcheck import Probe, passes, randn

if HAS_TRITON:
    import triton
    import triton.language as tl

    from ._utils import program_tile


# --------------------------------------------------------------------------- Triton kernels
if HAS_TRITON:

    @triton.jit
    def _se_reduce_kernel(
        X, DY, OUT, PSUM_X, PSUM_DYX,
        C, HW, CHUNK,
        sxn, sxc, sxhw, sdn, sdc, sdhw, son, soc, sohw,
        WITH_DY: tl.constexpr, HAS_RES: tl.constexpr, ACC: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """Partial sums over one chunk of H*W: ``PSUM_X[n, chunk, c] = sum x`` and, WITH_DY,
        ``PSUM_DYX[n, chunk, c] = sum dy * x`` (``dy`` zeroed where ``OUT <= 0`` if HAS_RES).
        Grid ``(chunks, cdiv(C, BLOCK_C), N)``; partial buffers ``(N, chunks, C)`` contiguous."""
        pid_s = tl.program_id(0)
        n = tl.program_id(2).to(tl.int64)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        acc_x = tl.zeros([BLOCK_C, BLOCK_HW], ACC)
        acc_dyx = tl.zeros([BLOCK_C, BLOCK_HW], ACC)
        hw0 = pid_s.to(tl.int64) * CHUNK
        for off in range(0, CHUNK, BLOCK_HW):
            hw = hw0 + off + tl.arange(0, BLOCK_HW)
            mask = c_mask[:, None] & (hw < HW)[None, :]
            x = tl.load(X + n * sxn + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0).to(ACC)
            acc_x += x
            if WITH_DY:
                dy = tl.load(DY + n * sdn + c[:, None] * sdc + hw[None, :] * sdhw, mask=mask, other=0).to(ACC)
                if HAS_RES:
                    o = tl.load(OUT + n * son + c[:, None] * soc + hw[None, :] * sohw, mask=mask, other=0).to(ACC)
                    dy = tl.where(o > 0, dy, 0.0)
                acc_dyx += dy * x
        dst = (n * tl.num_programs(0) + pid_s) * C + c
        tl.store(PSUM_X + dst, tl.sum(acc_x, axis=1), mask=c_mask)
        if WITH_DY:
            tl.store(PSUM_DYX + dst, tl.sum(acc_dyx, axis=1), mask=c_mask)

    @triton.jit
    def _se_apply_kernel(
        X, G, RES, OUT,
        C, HW,
        sxn, sxc, sxhw, srn, src, srhw, son, soc, sohw,
        HAS_RES: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``OUT = X * G[n, c]`` or ``relu(X * G[n, c] + RES)``; ``G`` ``(N, C)`` contiguous.
        Grid ``(cdiv(HW, BLOCK_HW), cdiv(C, BLOCK_C), N)``."""
        n, c, hw = program_tile(BLOCK_C, BLOCK_HW)
        c_mask = c < C
        mask = c_mask[:, None] & (hw < HW)[None, :]
        x = tl.load(X + n * sxn + c[:, None] * sxc + hw[None, :] * sxhw, mask=mask, other=0).to(ACC)
        g = tl.load(G + n * C + c, mask=c_mask, other=0).to(ACC)
        y = x * g[:, None]
        if HAS_RES:
            r = tl.load(RES + n * srn + c[:, None] * src + hw[None, :] * srhw, mask=mask, other=0).to(ACC)
            y = y + r
            y = tl.where(y < 0, 0.0, y)  # ReLU that keeps NaN, like torch.relu
        tl.store(OUT + n * son + c[:, None] * soc + hw[None, :] * sohw, y.to(OUT.dtype.element_ty), mask=mask)

    @triton.jit
    def _se_dx_kernel(
        DY, OUT, G, DS, DX, DRES,
        C, HW,
        sdn, sdc, sdhw, son, soc, sohw, sxn, sxc, sxhw, srn, src, srhw,
        HAS_RES: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr,
    ):
        """``dy = DY`` (zeroed where ``OUT <= 0`` if HAS_RES, then also written to ``DRES``);
        ``DX = dy * G[n, c] + DS[n, c]``. ``G``, ``DS`` ``(N, C)`` contiguous.
        Grid ``(cdiv(HW, BLOCK_HW), cdiv(C, BLOCK_C), N)``."""
        n, c, hw = program_tile(BLOCK_C, BLOCK_HW)
        c_mask = c < C
        mask = c_mask[:, None] & (hw < HW)[None, :]
        dy = tl.load(DY + n * sdn + c[:, None] * sdc + hw[None, :] * sdhw, mask=mask, other=0).to(ACC)
        if HAS_RES:
            o = tl.load(OUT + n * son + c[:, None] * soc + hw[None, :] * sohw, mask=mask, other=0).to(ACC)
            dy = tl.where(o > 0, dy, 0.0)
            tl.store(DRES + n * srn + c[:, None] * src + hw[None, :] * srhw, dy.to(DRES.dtype.element_ty), mask=mask)
        g = tl.load(G + n * C + c, mask=c_mask, other=0).to(ACC)
        ds = tl.load(DS + n * C + c, mask=c_mask, other=0).to(ACC)
        dx = dy * g[:, None] + ds[:, None]
        tl.store(DX + n * sxn + c[:, None] * sxc + hw[None, :] * sxhw, dx.to(DX.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- shared torch math
def _excite(s: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The FC part on the means ``s (N, C)`` (compute dtype): returns ``(u, h, g)``."""
    dt = s.dtype
    u = torch.addmm(b1.to(dt), s, w1.reshape(w1.shape[0], -1).to(dt).t())
    h = torch.relu(u)
    g = torch.sigmoid(torch.addmm(b2.to(dt), h, w2.reshape(w2.shape[0], -1).to(dt).t()))
    return u, h, g


def _excite_backward(s: Tensor, sum_dyx: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, hw: int):
    """FC backward from ``s = mean_hw(x)`` and ``sum_dyx = sum_hw(dy * x)`` (both ``(N, C)``,
    compute dtype). Returns ``(g, ds / hw, dw1, db1, dw2, db2)``: ``g`` and ``ds / hw``
    ``(N, C)`` in the compute dtype, weight grads in the weights' shapes and dtypes."""
    dt = s.dtype
    u, h, g = _excite(s, w1, b1, w2, b2)
    dz = sum_dyx * g * (1 - g)
    du = torch.where(u > 0, dz @ w2.reshape(w2.shape[0], -1).to(dt), 0)
    ds = du @ w1.reshape(w1.shape[0], -1).to(dt)
    return (
        g,
        ds / hw,
        (du.t() @ s).reshape(w1.shape).to(w1.dtype),
        du.sum(0).to(b1.dtype),
        (dz.t() @ h).reshape(w2.shape).to(w2.dtype),
        dz.sum(0).to(b2.dtype),
    )


# --------------------------------------------------------------------------- references
def se_scale_reference(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, identity: Optional[Tensor] = None) -> Tensor:
    """Plain-PyTorch ``se_scale`` (same math, same compute dtype); output in x's dtype and
    :func:`out_memory_format`."""
    dt = compute_dtype(x, w1)
    xa = x.to(dt)
    g = _excite(xa.mean(dim=(2, 3)), w1, b1, w2, b2)[2]
    y = xa * g[:, :, None, None]
    if identity is not None:
        y = torch.relu(y + identity.to(dt))
    return y.to(x.dtype).contiguous(memory_format=out_memory_format(x))


def se_scale_backward_reference(grad_out: Tensor, x: Tensor, out: Optional[Tensor], w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor):
    """Plain-PyTorch ``se_scale_backward`` (explicit formulas, see the module docstring)."""
    dt = compute_dtype(x, w1)
    fmt = out_memory_format(x)
    dy = grad_out.to(dt)
    if out is not None:
        dy = torch.where(out > 0, dy, 0)
    xa = x.to(dt)
    hw = x.shape[2] * x.shape[3]
    g, ds, dw1, db1, dw2, db2 = _excite_backward(xa.mean(dim=(2, 3)), (dy * xa).sum(dim=(2, 3)), w1, b1, w2, b2, hw)
    dx = (dy * g[:, :, None, None] + ds[:, :, None, None]).to(x.dtype).contiguous(memory_format=fmt)
    d_identity = dy.to(x.dtype).contiguous(memory_format=fmt) if out is not None else x.new_empty(0)
    return dx, d_identity, dw1, db1, dw2, db2



def se_scale_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`.selfcheck`): the residual tail at odd shapes, fp32
    weights; forward output then all six gradients, launchers against references."""
    c, cr = 19, 5
    x, identity = (randn((2, c, 5, 7), gen, device, dtype, channels_last) for _ in range(2))
    w1, b1 = randn((cr, c, 1, 1), gen, device, torch.float32, scale=c ** -0.5), randn((cr,), gen, device, torch.float32)
    w2, b2 = randn((c, cr, 1, 1), gen, device, torch.float32, scale=cr ** -0.5), randn((c,), gen, device, torch.float32)
    dy = randn((2, c, 5, 7), gen, device, dtype, channels_last)

    def run(forward, backward):
        def both(x, identity, dy, *weights):
            out = forward(x, *weights, identity)
            return [out, *backward(dy, x, out, *weights)]
        return both

    return Probe((x, identity, dy, w1, b1, w2, b2), run(se_scale_forward_triton, se_scale_backward_triton),
                 run(se_scale_reference, se_scale_backward_reference))

# --------------------------------------------------------------------------- launchers
def _sums_triton(x: Tensor, dy: Optional[Tensor], out: Optional[Tensor], dt: torch.dtype, block_c, block_hw, chunks):
    """``(sum_hw(x), sum_hw(dy * x))`` by _se_reduce_kernel, each ``(N, C)`` in ``dt``; the
    second is None when ``dy`` is None. ``out`` (optional) masks ``dy`` to ``out > 0``."""
    n, c, h, w = x.shape
    hw = h * w
    x, sx = merge_hw(x)
    bc, bhw = tile_shape(c, hw, channels_inner(sx), not x.is_cuda)
    bc, bhw = block_c or bc, block_hw or bhw
    cblocks = triton.cdiv(c, bc)
    chunk, chunks = split_reduction(hw, bhw, n * cblocks, x.device, chunks)
    psum_x = torch.empty((n, chunks, c), dtype=dt, device=x.device)
    psum_dyx = torch.empty_like(psum_x) if dy is not None else psum_x  # not written without dy
    dy_t, sd = merge_hw(dy) if dy is not None else (x, sx)
    out_t, so = merge_hw(out) if out is not None else (x, sx)
    _se_reduce_kernel[(chunks, cblocks, n)](
        x, dy_t, out_t, psum_x, psum_dyx, c, hw, chunk, *sx, *sd, *so,
        WITH_DY=dy is not None, HAS_RES=out is not None, ACC=tl_dtype(dt), BLOCK_C=bc, BLOCK_HW=bhw,
    )
    return psum_x.sum(1), (psum_dyx.sum(1) if dy is not None else None)


@on_input_device
def se_scale_forward_triton(
    x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, identity: Optional[Tensor] = None, *,
    out: Optional[Tensor] = None, block_c: Optional[int] = None, block_hw: Optional[int] = None, chunks: Optional[int] = None,
) -> Tensor:
    """Triton ``se_scale``. ``out``: optional preallocated output (x's shape and dtype, H and W
    mergeable); ``block_c``/``block_hw``/``chunks`` override the launch heuristics."""
    n, c, h, w = x.shape
    dt = compute_dtype(x, w1)
    out = empty_out(x) if out is None else out
    x, sx = merge_hw(x)  # before the two passes: an unmergeable x is copied once
    sum_x, _ = _sums_triton(x, None, None, dt, block_c, block_hw, chunks)
    g = _excite(sum_x / (h * w), w1, b1, w2, b2)[2].contiguous()
    res, sr = merge_hw(identity) if identity is not None else (x, sx)
    _, so = merge_hw(out)
    grid, bc, bhw = tile_grid(out, so, block_c, block_hw)
    _se_apply_kernel[grid](
        x, g, res, out, c, h * w, *sx, *sr, *so,
        HAS_RES=identity is not None, ACC=tl_dtype(dt), BLOCK_C=bc, BLOCK_HW=bhw,
    )
    return out


@on_input_device
def se_scale_backward_triton(
    grad_out: Tensor, x: Tensor, out: Optional[Tensor], w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, *,
    dx: Optional[Tensor] = None, d_identity: Optional[Tensor] = None,
    block_c: Optional[int] = None, block_hw: Optional[int] = None, chunks: Optional[int] = None,
):
    """Triton ``se_scale_backward``; ``dx``/``d_identity``: optional preallocated outputs."""
    n, c, h, w = x.shape
    dt = compute_dtype(x, w1)
    has_res = out is not None
    dx = empty_out(x) if dx is None else dx
    if not has_res:
        d_identity = x.new_empty(0)
    elif d_identity is None:
        d_identity = empty_out(x)
    x, grad_out = merge_hw(x)[0], merge_hw(grad_out)[0]  # unmergeable layouts are copied once
    out = merge_hw(out)[0] if has_res else None
    sum_x, sum_dyx = _sums_triton(x, grad_out, out, dt, block_c, block_hw, chunks)
    g, ds, dw1, db1, dw2, db2 = _excite_backward(sum_x / (h * w), sum_dyx, w1, b1, w2, b2, h * w)
    _, sd = merge_hw(grad_out)
    out_t, so = merge_hw(out) if has_res else (grad_out, sd)
    _, sx = merge_hw(dx)
    dres, sr = (d_identity, merge_hw(d_identity)[1]) if has_res else (dx, sx)
    grid, bc, bhw = tile_grid(dx, sx, block_c, block_hw)
    _se_dx_kernel[grid](
        grad_out, out_t, g.contiguous(), ds.contiguous(), dx, dres,
        c, h * w, *sd, *so, *sx, *sr,
        HAS_RES=has_res, ACC=tl_dtype(dt), BLOCK_C=bc, BLOCK_HW=bhw,
    )
    return dx, d_identity, dw1, db1, dw2, db2


# --------------------------------------------------------------------------- validation
def _check_inputs(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, identity: Optional[Tensor]) -> None:
    op = "fastmtl.se_scale"
    check_floating(op, x=x, w1=w1, b1=b1, w2=w2, b2=b2, identity=identity)
    check_same_device(op, x=x, w1=w1, b1=b1, w2=w2, b2=b2, identity=identity)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[1]
    if w1.dim() not in (2, 4) or tuple(w1.shape[1:]) not in ((c,), (c, 1, 1)):
        raise ValueError(f"{op}: w1 must be (Cr, C={c}) or (Cr, {c}, 1, 1), got {tuple(w1.shape)}")
    cr = w1.shape[0]
    if tuple(w2.shape) not in ((c, cr), (c, cr, 1, 1)):
        raise ValueError(f"{op}: w2 must be (C={c}, Cr={cr}) or ({c}, {cr}, 1, 1), got {tuple(w2.shape)}")
    if tuple(b1.shape) != (cr,):
        raise ValueError(f"{op}: b1 must be (Cr={cr},), got {tuple(b1.shape)}")
    if tuple(b2.shape) != (c,):
        raise ValueError(f"{op}: b2 must be (C={c},), got {tuple(b2.shape)}")
    for name, t in (("b1", b1), ("w2", w2), ("b2", b2)):
        if t.dtype != w1.dtype:
            raise TypeError(f"{op}: {name} is {t.dtype} but w1 is {w1.dtype}; the weights must share one dtype")
    if identity is not None:
        if identity.shape != x.shape:
            raise ValueError(f"{op}: identity must have x's shape {tuple(x.shape)}, got {tuple(identity.shape)}")
        if identity.dtype != x.dtype:
            raise TypeError(f"{op}: identity is {identity.dtype} but x is {x.dtype}")


# --------------------------------------------------------------------------- torch.library
@torch.library.custom_op("fastmtl::se_scale", mutates_args=())
def se_scale(x: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor, identity: Optional[Tensor] = None) -> Tensor:
    """``x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)``, or ``relu(that + identity)``.

    ``x``, ``identity`` ``(N, C, H, W)``; weights as in the module docstring. Returns
    ``(N, C, H, W)`` in x's dtype, channels_last iff x's channels are innermost.
    """
    _check_inputs(x, w1, b1, w2, b2, identity)
    if use_triton(x) and passes("se_scale", x):
        return se_scale_forward_triton(x, w1, b1, w2, b2, identity)
    return se_scale_reference(x, w1, b1, w2, b2, identity)


@se_scale.register_fake
def _se_scale_fake(x, w1, b1, w2, b2, identity=None):
    _check_inputs(x, w1, b1, w2, b2, identity)
    return empty_out(x)


@torch.library.custom_op("fastmtl::se_scale_backward", mutates_args=())
def se_scale_backward(
    grad_out: Tensor, x: Tensor, out: Optional[Tensor], w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of :func:`se_scale`: ``(dx, d_identity, dw1, db1, dw2, db2)``.

    ``out`` is se_scale's output when it was called with ``identity`` (its sign gives the
    ReLU mask), else None; ``d_identity`` is then an empty tensor. ``dx``/``d_identity`` are
    ``(N, C, H, W)`` in x's dtype and :func:`out_memory_format`; weight grads have the
    weights' shapes and dtypes.
    """
    if use_triton(grad_out) and passes("se_scale", x):
        return se_scale_backward_triton(grad_out, x, out, w1, b1, w2, b2)
    return se_scale_backward_reference(grad_out, x, out, w1, b1, w2, b2)


@se_scale_backward.register_fake
def _se_scale_backward_fake(grad_out, x, out, w1, b1, w2, b2):
    d_identity = empty_out(x) if out is not None else x.new_empty(0)
    return empty_out(x), d_identity, torch.empty_like(w1), torch.empty_like(b1), torch.empty_like(w2), torch.empty_like(b2)


def _se_scale_setup_context(ctx, inputs, output):
    x, w1, b1, w2, b2, identity = inputs
    ctx.has_identity = identity is not None
    ctx.save_for_backward(x, output if identity is not None else None, w1, b1, w2, b2)


def _se_scale_autograd(ctx, grad):
    x, out, w1, b1, w2, b2 = ctx.saved_tensors
    dx, d_identity, dw1, db1, dw2, db2 = se_scale_backward(grad, x, out, w1, b1, w2, b2)
    return dx, dw1, db1, dw2, db2, (d_identity if ctx.has_identity else None)


se_scale.register_autograd(_se_scale_autograd, setup_context=_se_scale_setup_context)


@register_flop_formula(torch.ops.fastmtl.se_scale)
def _se_scale_flop(x_shape, w1_shape, *args, out_shape=None, **kwargs) -> int:
    """Two FC layers ``C -> Cr -> C`` per image: 2 * 2 * N * C * Cr (as two 1x1 convs count)."""
    return 2 * 2 * x_shape[0] * x_shape[1] * w1_shape[0]


@register_flop_formula(torch.ops.fastmtl.se_scale_backward)
def _se_scale_backward_flop(grad_shape, x_shape, saved_out_shape, w1_shape, *args, out_shape=None, **kwargs) -> int:
    """Input and weight gradients of both FC layers: 4 * 2 * N * C * Cr."""
    return 4 * 2 * x_shape[0] * x_shape[1] * w1_shape[0]
