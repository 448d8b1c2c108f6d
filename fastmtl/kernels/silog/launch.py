"""Launchers of the SI-log kernels (:mod:`.kernels`): blocks, reduction chunks, grids.

:func:`silog_stats_triton` and :func:`silog_stats_backward_triton` take the arguments of the
ops (:mod:`.op`), plus launch overrides, and return their results; they run only when triton
imports.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._utils import compute_dtype, merge_hw, on_input_device, pow2_block, split_reduction, tl_dtype
from ..dispatch import HAS_TRITON
from .reference import _as_nhw, _bounds

if HAS_TRITON:
    import triton

    from .kernels import _silog_bwd_kernel, _silog_fwd_kernel


def _block(hw: int, interpret: bool) -> int:
    return pow2_block(hw, 16, 16384 if interpret else 1024)


@on_input_device
def silog_stats_triton(
    pred: Tensor, target: Tensor, min_depth: Optional[float] = None, max_depth: Optional[float] = None,
    eps: float = 0.01, log_input: bool = False, *, block: Optional[int] = None, chunks: Optional[int] = None,
) -> Tensor:
    """Triton ``silog_stats``; ``block``/``chunks`` override the launch heuristics."""
    dt = compute_dtype(pred, target)
    p, sp = merge_hw(_as_nhw(pred))
    t, st = merge_hw(_as_nhw(target))
    n, h, w = p.shape
    hw = h * w
    block = block or _block(hw, not p.is_cuda)
    chunk, chunks = split_reduction(hw, block, n, p.device, chunks)
    part = torch.empty((n, chunks, 3), dtype=dt, device=p.device)
    lo, hi = _bounds(min_depth, max_depth, eps, log_input)
    _silog_fwd_kernel[(chunks, n)](
        p, t, part, hw, chunk, *sp, *st, lo, hi, eps, math.inf,
        LOG_INPUT=log_input, ACC=tl_dtype(dt), BLOCK=block,
    )
    return part.sum(1)


@on_input_device
def silog_stats_backward_triton(
    grad_stats: Tensor, pred: Tensor, target: Tensor, min_depth: Optional[float] = None,
    max_depth: Optional[float] = None, eps: float = 0.01, log_input: bool = False, *,
    dpred: Optional[Tensor] = None, block: Optional[int] = None,
) -> Tensor:
    """Triton ``silog_stats_backward``; ``dpred``: optional preallocated output (pred's shape
    and dtype)."""
    dt = compute_dtype(pred, target)
    dpred = torch.empty(pred.shape, dtype=pred.dtype, device=pred.device) if dpred is None else dpred
    p, sp = merge_hw(_as_nhw(pred))
    t, st = merge_hw(_as_nhw(target))
    _, sd = merge_hw(_as_nhw(dpred))
    n, h, w = p.shape
    block = block or _block(h * w, not p.is_cuda)
    lo, hi = _bounds(min_depth, max_depth, eps, log_input)
    _silog_bwd_kernel[(triton.cdiv(h * w, block), n)](
        grad_stats.contiguous(), p, t, dpred, h * w, *sp, *st, *sd, lo, hi, eps, math.inf,
        LOG_INPUT=log_input, ACC=tl_dtype(dt), BLOCK=block,
    )
    return dpred
