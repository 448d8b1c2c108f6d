"""Launchers of the sigmoid-gate kernels (:mod:`.kernels`): tiles and grids.

:func:`sigmoid_gate_forward_triton` and :func:`sigmoid_gate_backward_triton` take the arguments
of the ops (:mod:`.op`), plus optional preallocated outputs and tile overrides, and return
their results; they run only when triton imports.
"""
from __future__ import annotations

from typing import Optional, Tuple

from torch import Tensor

from .._utils import compute_dtype, empty_out, merge_hw, on_input_device, tile_grid, tl_dtype
from ..dispatch import HAS_TRITON

if HAS_TRITON:
    from .kernels import _gate_bwd_kernel, _gate_fwd_kernel


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
