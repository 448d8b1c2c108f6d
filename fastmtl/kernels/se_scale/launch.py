"""Launchers of the SE kernels (:mod:`.kernels`): tile sizes, reduction splits, grids.

:func:`se_scale_forward_triton` and :func:`se_scale_backward_triton` take the arguments of the
ops (:mod:`.op`), plus optional preallocated outputs and launch overrides, and return their
results; they run only when triton imports.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._utils import (
    channels_inner, compute_dtype, empty_out, merge_hw, next_pow2, on_input_device, split_reduction, tile_grid,
    tile_shape, tl_dtype,
)
from ..dispatch import HAS_TRITON

if HAS_TRITON:
    import triton

    from .kernels import (
        _se_apply_kernel, _se_dx_kernel, _se_excite_backward_kernel, _se_excite_kernel, _se_reduce_kernel,
        _se_weight_grad_kernel,
    )


def _excite_blocks(c: int, cr: int) -> Tuple[int, int]:
    """``(BLOCK_C, BLOCK_CR)`` of the excitation kernels: every hidden unit in one block, tiles
    of about 2048 weights (4096 spill registers on sm_90)."""
    block_cr = next_pow2(max(cr, 2))
    return min(next_pow2(c), max(2, 2048 // block_cr)), block_cr


def _fc_args(w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor]):
    """Kernel arguments of the four weights: ``(pointers, strides, flags)``; a missing bias is
    replaced by ``w1`` (never read)."""
    w1f, w2f = w1.reshape(w1.shape[0], -1), w2.reshape(w2.shape[0], -1)  # views of conv / linear weights
    ptrs = (w1f, b1 if b1 is not None else w1f, w2f, b2 if b2 is not None else w1f)
    return ptrs, (*w1f.stride(), *w2f.stride()), dict(HAS_B1=b1 is not None, HAS_B2=b2 is not None)


def _partial_sums(x: Tensor, dy: Optional[Tensor], out: Optional[Tensor], dt: torch.dtype, block_c, block_hw, chunks):
    """Partial sums over H*W by _se_reduce_kernel: ``(psum_x, psum_dyx)``, each ``(N, chunks, C)``
    in ``dt`` (``psum_dyx`` is None without ``dy``). ``out`` (optional) masks ``dy`` to ``out > 0``."""
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
    return psum_x, (psum_dyx if dy is not None else None)


@on_input_device
def se_scale_forward_triton(
    x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], identity: Optional[Tensor] = None,
    act: str = "relu", gate: str = "sigmoid", *,
    out: Optional[Tensor] = None, block_c: Optional[int] = None, block_hw: Optional[int] = None, chunks: Optional[int] = None,
) -> Tensor:
    """Triton ``se_scale`` in three launches: partial sums, excitation, gate (+ residual).
    ``out``: optional preallocated output (x's shape and dtype, H and W mergeable);
    ``block_c``/``block_hw``/``chunks`` override the launch heuristics of the two big kernels."""
    n, c, h, w = x.shape
    dt = compute_dtype(x, w1)
    out = empty_out(x) if out is None else out
    x, sx = merge_hw(x)  # before the two passes: an unmergeable x is copied once
    psum, _ = _partial_sums(x, None, None, dt, block_c, block_hw, chunks)
    g = torch.empty((n, c), dtype=dt, device=x.device)
    fc, fc_strides, fc_flags = _fc_args(w1, b1, w2, b2)
    ebc, ebcr = _excite_blocks(c, w1.shape[0])
    _se_excite_kernel[(n,)](
        psum, *fc, g, c, w1.shape[0], psum.shape[1], 1.0 / (h * w), *fc_strides,
        **fc_flags, ACT=act, GATE=gate, ACC=tl_dtype(dt), BLOCK_C=ebc, BLOCK_CR=ebcr,
    )
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
    grad_out: Tensor, x: Tensor, out: Optional[Tensor], w1: Tensor, b1: Optional[Tensor], w2: Tensor,
    b2: Optional[Tensor], act: str = "relu", gate: str = "sigmoid", *,
    dx: Optional[Tensor] = None, d_identity: Optional[Tensor] = None,
    block_c: Optional[int] = None, block_hw: Optional[int] = None, chunks: Optional[int] = None,
):
    """Triton ``se_scale_backward`` in four launches: partial sums, excitation backward, weight
    gradients, dx (+ d_identity). ``dx``/``d_identity``: optional preallocated outputs."""
    n, c, h, w = x.shape
    cr = w1.shape[0]
    dt = compute_dtype(x, w1)
    has_res = out is not None
    dx = empty_out(x) if dx is None else dx
    if not has_res:
        d_identity = x.new_empty(0)
    elif d_identity is None:
        d_identity = empty_out(x)
    x, grad_out = merge_hw(x)[0], merge_hw(grad_out)[0]  # unmergeable layouts are copied once
    out = merge_hw(out)[0] if has_res else None
    psum_x, psum_dyx = _partial_sums(x, grad_out, out, dt, block_c, block_hw, chunks)

    per_c = torch.empty((4, n, c), dtype=dt, device=x.device)  # g, ds, s, dz
    per_r = torch.empty((2, n, cr), dtype=dt, device=x.device)  # h, du
    fc, fc_strides, fc_flags = _fc_args(w1, b1, w2, b2)
    ebc, ebcr = _excite_blocks(c, cr)
    _se_excite_backward_kernel[(n,)](
        psum_x, psum_dyx, *fc, *per_c, *per_r, c, cr, psum_x.shape[1], 1.0 / (h * w), *fc_strides,
        **fc_flags, ACT=act, GATE=gate, ACC=tl_dtype(dt), BLOCK_C=ebc, BLOCK_CR=ebcr,
    )
    dw1, dw2 = torch.empty(w1.shape, dtype=w1.dtype, device=x.device), torch.empty(w2.shape, dtype=w2.dtype, device=x.device)
    db1 = torch.empty_like(b1, memory_format=torch.contiguous_format) if b1 is not None else x.new_empty(0)
    db2 = torch.empty_like(b2, memory_format=torch.contiguous_format) if b2 is not None else x.new_empty(0)
    _se_weight_grad_kernel[(triton.cdiv(c, ebc),)](
        per_c[2], per_r[0], per_r[1], per_c[3], dw1, db1 if b1 is not None else dw1, dw2, db2 if b2 is not None else dw1,
        n, c, cr, **fc_flags, ACC=tl_dtype(dt), BLOCK_C=ebc, BLOCK_CR=ebcr,
    )

    _, sd = merge_hw(grad_out)
    out_t, so = merge_hw(out) if has_res else (grad_out, sd)
    _, sx = merge_hw(dx)
    dres, sr = (d_identity, merge_hw(d_identity)[1]) if has_res else (dx, sx)
    grid, bc, bhw = tile_grid(dx, sx, block_c, block_hw)
    _se_dx_kernel[grid](
        grad_out, out_t, per_c[0], per_c[1], dx, dres,
        c, h * w, *sd, *so, *sx, *sr,
        HAS_RES=has_res, ACC=tl_dtype(dt), BLOCK_C=bc, BLOCK_HW=bhw,
    )
    return dx, d_identity, dw1, db1, dw2, db2
