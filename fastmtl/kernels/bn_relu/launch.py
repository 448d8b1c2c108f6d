"""Launchers of the BatchNorm + ReLU kernels (:mod:`.kernels`): tiles, splits, grids.

:func:`bn_relu_forward_triton` and :func:`bn_relu_backward_triton` take the arguments of the
ops (:mod:`.op`), plus optional preallocated outputs and launch overrides, and return their
results; they run only when triton imports.
"""
from __future__ import annotations

import math
import struct
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._utils import (
    cdiv, channels_inner, compute_dtype, empty_out, merge_hw, next_pow2, on_input_device, pow2_block,
    reduction_chunks, tile_shape, tl_dtype,
)
from ..dispatch import HAS_TRITON

if HAS_TRITON:
    from .kernels import _bn_relu_apply_kernel, _bn_relu_dx_kernel, _bn_relu_grad_sums_kernel, _bn_stats_kernel

MAX_INNER_CHANNELS = 32
"""channels_last tiles on a GPU take at most this many channels (64 bytes of bf16 per pixel):
more channel blocks, so fewer splits for the same number of programs, so fewer partials for
every program to merge."""
MERGE_SHARE = 16
"""At most ``sqrt(M / MERGE_SHARE)`` splits (``M = N*H*W``): the partials every program of a
split kernel merges (from L2) stay within about 1/8 of the bytes it streams (bf16). Not yet tuned
on a GPU."""


def _fp32_pair(value: float) -> Tuple[float, float]:
    """``(hi, lo)`` fp32 numbers with ``hi + lo == value`` to about 48 bits (Triton passes
    Python floats as fp32; the fp64 kernels add the two)."""
    hi = struct.unpack("f", struct.pack("f", value))[0]
    return hi, struct.unpack("f", struct.pack("f", value - hi))[0]


def _tile(c: int, p: int, strides: Tuple[int, ...], device: torch.device) -> Tuple[int, int]:
    """``(BLOCK_C, BLOCK_P)``: :func:`tile_shape`, with at most :data:`MAX_INNER_CHANNELS`
    channels in a channels_last tile on a GPU."""
    inner = channels_inner(strides)
    block_c, block_p = tile_shape(c, p, inner, device.type != "cuda")
    if inner and device.type == "cuda" and block_c > MAX_INNER_CHANNELS:
        block_c, block_p = MAX_INNER_CHANNELS, min(next_pow2(p), 2048 // MAX_INNER_CHANNELS)
    return block_c, block_p


class _Split:
    """The launch geometry shared by a pass's two kernels: tiles of ``block_c`` channels x
    ``block_p`` pixels of one image, ``splits`` runs of ``chunk`` consecutive tiles each.
    ``block_c``/``block_p``/``splits`` (a wish, at most one per tile) override the heuristics."""

    def __init__(self, x: Tensor, strides: Tuple[int, ...], block_c: Optional[int], block_p: Optional[int],
                 splits: Optional[int]):
        n, c, h, w = x.shape
        self.p = h * w
        bc, bp = _tile(c, self.p, strides, x.device)
        self.block_c, self.block_p = block_c or bc, block_p or bp
        self.tp = cdiv(self.p, self.block_p)
        self.tiles = n * self.tp
        cblocks = cdiv(c, self.block_c)
        if splits is None:
            cap = max(1, math.isqrt(n * self.p // MERGE_SHARE))
            splits = min(reduction_chunks(cblocks, self.tiles, 1, x.device), cap)
        self.chunk = cdiv(self.tiles, max(1, min(splits, self.tiles)))
        self.splits = cdiv(self.tiles, self.chunk)
        self.block_s = pow2_block(self.splits, 2, max(2, 2048 // self.block_c))
        self.grid = (self.splits, cblocks)

    def args(self) -> Tuple[int, int, int, int]:
        """The kernel arguments ``(P, TP, TILES, CHUNK)`` (they follow ``C``)."""
        return self.p, self.tp, self.tiles, self.chunk


@on_input_device
def bn_relu_forward_triton(
    x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
    running_var: Optional[Tensor], momentum: float = 0.1, eps: float = 1e-5, *,
    out: Optional[Tensor] = None, block_c: Optional[int] = None, block_p: Optional[int] = None,
    splits: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Triton ``bn_relu`` in two launches: partial statistics, then merge + apply (+ running
    statistics). ``out``: optional preallocated output (x's shape and dtype, H and W
    mergeable); ``block_c``/``block_p``/``splits`` override the launch heuristics."""
    c = x.shape[1]
    dt = compute_dtype(x, weight)
    out = empty_out(x) if out is None else out
    x, sx = merge_hw(x)
    geo = _Split(x, sx, block_c, block_p, splits)
    pmean, pm2 = torch.empty((2, geo.splits, c), dtype=dt, device=x.device)
    pcount = torch.empty((geo.splits,), dtype=dt, device=x.device)
    acc = tl_dtype(dt)
    _bn_stats_kernel[geo.grid](
        x, pmean, pm2, pcount, c, *geo.args(), *sx, ACC=acc, BLOCK_C=geo.block_c, BLOCK_P=geo.block_p,
    )
    mean, invstd = (torch.empty((c,), dtype=dt, device=x.device) for _ in range(2))  # returned: no aliasing
    has_running = running_mean is not None
    _, so = merge_hw(out)
    _bn_relu_apply_kernel[geo.grid](
        x, out, weight if weight is not None else mean, bias if bias is not None else mean, pmean, pm2, pcount,
        mean, invstd, running_mean if has_running else mean, running_var if has_running else mean,
        c, *geo.args(), geo.splits, *_fp32_pair(eps), *_fp32_pair(momentum), *sx, *so,
        HAS_W=weight is not None, HAS_B=bias is not None, HAS_RUNNING=has_running, ACC=acc,
        BLOCK_C=geo.block_c, BLOCK_P=geo.block_p, BLOCK_S=geo.block_s,
    )
    return out, mean, invstd


@on_input_device
def bn_relu_backward_triton(
    grad: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, invstd: Tensor, *,
    dx: Optional[Tensor] = None, block_c: Optional[int] = None, block_p: Optional[int] = None,
    splits: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Triton ``bn_relu_backward`` in two launches: per-split gradient sums, then dx (+ dweight,
    dbias). ``dx``: optional preallocated output; the overrides as the forward's."""
    n, c, h, w = x.shape
    dt = mean.dtype
    dx = empty_out(x) if dx is None else dx
    x, sx = merge_hw(x)
    grad, sd = merge_hw(grad)
    geo = _Split(x, sx, block_c, block_p, splits)
    psum_g, psum_gx = torch.empty((2, geo.splits, c), dtype=dt, device=x.device)
    acc = tl_dtype(dt)
    flags = dict(HAS_W=weight is not None, HAS_B=bias is not None, ACC=acc)
    w_t, b_t = weight if weight is not None else mean, bias if bias is not None else mean
    _bn_relu_grad_sums_kernel[geo.grid](
        grad, x, w_t, b_t, mean, invstd, psum_g, psum_gx, c, *geo.args(), *sd, *sx,
        **flags, BLOCK_C=geo.block_c, BLOCK_P=geo.block_p,
    )
    dweight = torch.empty(c, dtype=weight.dtype, device=x.device) if weight is not None else x.new_empty(0)
    dbias = torch.empty(c, dtype=bias.dtype, device=x.device) if bias is not None else x.new_empty(0)
    _, so = merge_hw(dx)
    _bn_relu_dx_kernel[geo.grid](
        grad, x, w_t, b_t, mean, invstd, psum_g, psum_gx, dx,
        dweight if weight is not None else mean, dbias if bias is not None else mean,
        c, *geo.args(), geo.splits, n * h * w, *sd, *sx, *so,
        **flags, BLOCK_C=geo.block_c, BLOCK_P=geo.block_p, BLOCK_S=geo.block_s,
    )
    return dx, dweight, dbias
