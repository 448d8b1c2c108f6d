"""Training-mode BatchNorm2d followed by ReLU, in two passes over memory each way.

Math (per channel ``c``, over the ``M = N * H * W`` values of the batch)::

    mean  = mean(x),  var = mean((x - mean)^2)          (batch statistics, biased variance)
    invstd = 1 / sqrt(var + eps),  xhat = (x - mean) * invstd
    out   = relu(xhat * w + b)
    running_mean <- (1 - momentum) * running_mean + momentum * mean
    running_var  <- (1 - momentum) * running_var  + momentum * var * M / (M - 1)

Backward, with ``gz = grad`` where ``xhat * w + b > 0`` (else 0; the mask is recomputed from
``x``, so ``out`` is neither saved nor read)::

    dx = w * invstd * (gz - sum(gz) / M - xhat * sum(gz * xhat) / M)
    dw = sum(gz * xhat),  db = sum(gz)

Ops (namespace ``fastmtl``):

* ``bn_relu(x, weight, bias, running_mean, running_var, momentum, eps) -> (out, mean, invstd)``,
  which updates ``running_mean``/``running_var`` in place (both None: no running statistics);
* ``bn_relu_backward(grad, x, weight, bias, mean, invstd) -> (dx, dweight, dbias)``,

both with fake (meta) kernels. torch.library refuses an autograd formula on an op that mutates
its inputs, so the differentiable entry point is :func:`batch_norm_relu` (an
``autograd.Function``: ``bn_relu`` forward, ``bn_relu_backward`` backward, no double backward;
``torch.compile`` traces it whole). No FLOP formula: like ``aten.native_batch_norm``, the op
counts no FLOPs.

Shapes, layouts, dtypes: ``x`` ``(N, C, H, W)`` in any layout whose H and W merge into one
strided dim (NCHW, channels_last, channel slices of either; others are copied to NCHW first),
read in place as ``(N, C, P)`` with its strides; fp16 / bf16 / fp32 / fp64. ``weight``/``bias``
``(C,)`` or None (``affine=False``), ``running_mean``/``running_var`` ``(C,)`` or both None,
each of any floating dtype (fp32 under autocast). ``out`` has x's dtype and is channels_last
when x's channels are innermost, NCHW otherwise; ``mean``/``invstd`` ``(C,)`` are fp32 (fp64 if
``x`` or ``weight`` is fp64), the compute dtype of the kernels.

Triton path. The ``M`` values of a channel are cut into tiles of ``BLOCK_P`` pixels of one
image; a launch's programs each take a channel block and a *split*, a fixed run of consecutive
tiles. Forward in two launches: ``_bn_stats_kernel`` leaves per split and channel the partial
``(count, mean, M2)``, merged tile by tile with Chan's parallel formula (each tile's own mean
and squared deviations first: no ``sum x^2 - (sum x)^2 / M`` cancellation when |mean| >> std);
``_bn_relu_apply_kernel`` merges the partials of its channel block (the same fixed order in
every program: deterministic, no atomics), writes ``out`` over its split, and its split-0
programs write ``mean``/``invstd`` and update the running statistics. Backward in two:
``_bn_relu_grad_sums_kernel`` leaves per-split sums of ``gz`` and ``gz * xhat``;
``_bn_relu_dx_kernel`` adds them in a fixed order, writes ``dx`` over its split, and its
split-0 programs write ``dweight``/``dbias``. Bytes: the forward reads ``x`` twice and writes
``out`` once; the backward reads ``grad`` and ``x`` twice and writes ``dx`` once (eager
PyTorch: BatchNorm 3 + ReLU 2 passes forward, threshold_backward 3 + BatchNorm ~5 backward).
"""
from __future__ import annotations

import math
import struct
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._utils import (
    cdiv, channels_inner, check_floating, check_same_device, compute_dtype, empty_out, merge_hw, next_pow2,
    on_input_device, out_memory_format, pow2_block, reduction_chunks, tile_shape, tl_dtype,
)
from .dispatch import HAS_TRITON, use_triton
from .selfcheck import Probe, passes, randn

if HAS_TRITON:
    import triton
    import triton.language as tl

MAX_INNER_CHANNELS = 32
"""channels_last tiles on a GPU take at most this many channels (64 bytes of bf16 per pixel):
more channel blocks, so fewer splits for the same number of programs, so fewer partials for
every program to merge."""
MERGE_SHARE = 16
"""At most ``sqrt(M / MERGE_SHARE)`` splits (``M = N*H*W``): the partials every program of a
split kernel merges (from L2) stay within about 1/8 of the bytes it streams (bf16). Not yet tuned
on a GPU."""


# --------------------------------------------------------------------------- Triton kernels
if HAS_TRITON:

    @triton.jit
    def _bn_stats_kernel(
        X, PMEAN, PM2, PCOUNT,
        C, P, TP, TILES, CHUNK,
        sxn, sxc, sxp,
        ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        """Partial statistics of split ``s`` (tiles ``[s*CHUNK, min((s+1)*CHUNK, TILES))``; tile
        ``t`` is pixels ``(t % TP) * BLOCK_P ...`` of image ``t // TP``): ``PMEAN[s, c]``,
        ``PM2[s, c]`` (sum of squared deviations from that mean) and ``PCOUNT[s]`` (the values
        per channel). Grid ``(splits, cdiv(C, BLOCK_C))``; partial buffers contiguous."""
        s = tl.program_id(0)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        pr = tl.arange(0, BLOCK_P)
        count = tl.zeros([BLOCK_C], ACC)
        mean = tl.zeros([BLOCK_C], ACC)
        m2 = tl.zeros([BLOCK_C], ACC)
        t0 = s * CHUNK
        for t in range(t0, tl.minimum(t0 + CHUNK, TILES)):
            n = t // TP
            p = ((t - n * TP) * BLOCK_P + pr).to(tl.int64)
            p_mask = p < P
            mask = c_mask[:, None] & p_mask[None, :]
            x = tl.load(X + n.to(tl.int64) * sxn + c[:, None] * sxc + p[None, :] * sxp, mask=mask, other=0).to(ACC)
            k = tl.sum(p_mask.to(ACC), axis=0)
            tile_mean = tl.sum(x, axis=1) / k
            d = tl.where(mask, x - tile_mean[:, None], 0.0)
            total = count + k
            delta = tile_mean - mean
            mean += delta * (k / total)
            m2 += tl.sum(d * d, axis=1) + delta * delta * (count * (k / total))
            count = total
        tl.store(PMEAN + s * C + c, mean, mask=c_mask)
        tl.store(PM2 + s * C + c, m2, mask=c_mask)
        tl.store(PCOUNT + s + c * 0, count, mask=c == 0)

    @triton.jit
    def _bn_merge(PMEAN, PM2, PCOUNT, c, c_mask, C, S,
                  ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
        """``(mean, m2, count)`` of channels ``c`` from the ``S`` partials, in a fixed order: the
        mean as split 0's mean plus the count-weighted deviations of the others, then
        ``m2 = sum M2_s + count_s * (mean_s - mean)^2``."""
        ref = tl.load(PMEAN + c, mask=c_mask, other=0)
        shift = tl.zeros([BLOCK_C], ACC)
        count = tl.zeros([BLOCK_C], ACC)
        for s0 in range(0, S, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            s_mask = s < S
            k = tl.load(PCOUNT + s, mask=s_mask, other=0)
            m = tl.load(PMEAN + s[:, None] * C + c[None, :], mask=s_mask[:, None] & c_mask[None, :], other=0)
            shift += tl.sum(k[:, None] * (m - ref[None, :]), axis=0)
            count += tl.sum(k, axis=0)
        mean = ref + shift / count
        m2 = tl.zeros([BLOCK_C], ACC)
        for s0 in range(0, S, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            mask = (s < S)[:, None] & c_mask[None, :]
            k = tl.load(PCOUNT + s, mask=s < S, other=0)
            m = tl.load(PMEAN + s[:, None] * C + c[None, :], mask=mask, other=0)
            d = m - mean[None, :]
            m2 += tl.sum(tl.load(PM2 + s[:, None] * C + c[None, :], mask=mask, other=0) + k[:, None] * d * d, axis=0)
        return mean, m2, count

    @triton.jit
    def _bn_relu_apply_kernel(
        X, OUT, W, B, PMEAN, PM2, PCOUNT, MEAN, INVSTD, RMEAN, RVAR,
        C, P, TP, TILES, CHUNK, S,
        eps_hi, eps_lo, mom_hi, mom_lo,
        sxn, sxc, sxp, son, soc, sop,
        HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_RUNNING: tl.constexpr, ACC: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr,
    ):
        """``OUT = relu((X - mean) * invstd * W + B)`` over split ``s``'s tiles, the statistics
        merged from the partials; split 0 writes ``MEAN``/``INVSTD`` and updates ``RMEAN``/``RVAR``
        (in their dtype). ``eps``/``momentum`` come as fp32 pairs ``hi + lo`` (fp64-exact sums).
        Grid ``(splits, cdiv(C, BLOCK_C))``."""
        s = tl.program_id(0)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        mean, m2, count = _bn_merge(PMEAN, PM2, PCOUNT, c, c_mask, C, S, ACC, BLOCK_C, BLOCK_S)
        eps = tl.zeros([BLOCK_C], ACC) + eps_hi + eps_lo  # in ACC: fp64 kernels add them exactly
        invstd = tl.rsqrt(m2 / count + eps)
        scale = invstd
        if HAS_W:
            scale = invstd * tl.load(W + c, mask=c_mask, other=0).to(ACC)
        shift = tl.zeros([BLOCK_C], ACC)
        if HAS_B:
            shift = tl.load(B + c, mask=c_mask, other=0).to(ACC)
        if s == 0:
            tl.store(MEAN + c, mean, mask=c_mask)
            tl.store(INVSTD + c, invstd, mask=c_mask)
            if HAS_RUNNING:
                mom = tl.zeros([BLOCK_C], ACC) + mom_hi + mom_lo
                rm = tl.load(RMEAN + c, mask=c_mask, other=0).to(ACC)
                rv = tl.load(RVAR + c, mask=c_mask, other=0).to(ACC)
                tl.store(RMEAN + c, ((1 - mom) * rm + mom * mean).to(RMEAN.dtype.element_ty), mask=c_mask)
                tl.store(RVAR + c, ((1 - mom) * rv + mom * (m2 / (count - 1))).to(RVAR.dtype.element_ty), mask=c_mask)
        pr = tl.arange(0, BLOCK_P)
        t0 = s * CHUNK
        for t in range(t0, tl.minimum(t0 + CHUNK, TILES)):
            n = (t // TP).to(tl.int64)
            p = ((t - n * TP) * BLOCK_P + pr).to(tl.int64)
            mask = c_mask[:, None] & (p < P)[None, :]
            x = tl.load(X + n * sxn + c[:, None] * sxc + p[None, :] * sxp, mask=mask, other=0).to(ACC)
            y = (x - mean[:, None]) * scale[:, None] + shift[:, None]
            y = tl.where(y < 0, 0.0, y)  # ReLU that keeps NaN, like torch.relu
            tl.store(OUT + n * son + c[:, None] * soc + p[None, :] * sop, y.to(OUT.dtype.element_ty), mask=mask)

    @triton.jit
    def _bn_relu_grad_sums_kernel(
        DY, X, W, B, MEAN, INVSTD, PSUM_G, PSUM_GX,
        C, P, TP, TILES, CHUNK,
        sdn, sdc, sdp, sxn, sxc, sxp,
        HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        """Per split ``s``: ``PSUM_G[s, c] = sum gz`` and ``PSUM_GX[s, c] = sum gz * xhat``, ``gz``
        the gradient ``DY`` masked by the recomputed ReLU. Grid ``(splits, cdiv(C, BLOCK_C))``."""
        s = tl.program_id(0)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        mean = tl.load(MEAN + c, mask=c_mask, other=0)
        invstd = tl.load(INVSTD + c, mask=c_mask, other=0)
        scale = invstd
        if HAS_W:
            scale = invstd * tl.load(W + c, mask=c_mask, other=0).to(ACC)
        shift = tl.zeros([BLOCK_C], ACC)
        if HAS_B:
            shift = tl.load(B + c, mask=c_mask, other=0).to(ACC)
        acc_g = tl.zeros([BLOCK_C, BLOCK_P], ACC)
        acc_gx = tl.zeros([BLOCK_C, BLOCK_P], ACC)
        pr = tl.arange(0, BLOCK_P)
        t0 = s * CHUNK
        for t in range(t0, tl.minimum(t0 + CHUNK, TILES)):
            n = (t // TP).to(tl.int64)
            p = ((t - n * TP) * BLOCK_P + pr).to(tl.int64)
            mask = c_mask[:, None] & (p < P)[None, :]
            x = tl.load(X + n * sxn + c[:, None] * sxc + p[None, :] * sxp, mask=mask, other=0).to(ACC)
            dy = tl.load(DY + n * sdn + c[:, None] * sdc + p[None, :] * sdp, mask=mask, other=0).to(ACC)
            y = (x - mean[:, None]) * scale[:, None] + shift[:, None]  # the forward's, bit for bit
            gz = tl.where(y <= 0, 0.0, dy)
            acc_g += gz
            acc_gx += gz * ((x - mean[:, None]) * invstd[:, None])
        tl.store(PSUM_G + s * C + c, tl.sum(acc_g, axis=1), mask=c_mask)
        tl.store(PSUM_GX + s * C + c, tl.sum(acc_gx, axis=1), mask=c_mask)

    @triton.jit
    def _bn_relu_dx_kernel(
        DY, X, W, B, MEAN, INVSTD, PSUM_G, PSUM_GX, DX, DW, DB,
        C, P, TP, TILES, CHUNK, S, M,
        sdn, sdc, sdp, sxn, sxc, sxp, son, soc, sop,
        HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr,
    ):
        """``DX = W * invstd * (gz - sum_g / M - xhat * sum_gx / M)`` over split ``s``'s tiles, the
        sums added from the partials in a fixed order; split 0 writes ``DW = sum_gx`` and
        ``DB = sum_g`` (in their dtype). Grid ``(splits, cdiv(C, BLOCK_C))``."""
        s = tl.program_id(0)
        c = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = c < C
        sum_g = tl.zeros([BLOCK_C], ACC)
        sum_gx = tl.zeros([BLOCK_C], ACC)
        for s0 in range(0, S, BLOCK_S):
            sp = s0 + tl.arange(0, BLOCK_S)
            mask = (sp < S)[:, None] & c_mask[None, :]
            sum_g += tl.sum(tl.load(PSUM_G + sp[:, None] * C + c[None, :], mask=mask, other=0), axis=0)
            sum_gx += tl.sum(tl.load(PSUM_GX + sp[:, None] * C + c[None, :], mask=mask, other=0), axis=0)
        mean = tl.load(MEAN + c, mask=c_mask, other=0)
        invstd = tl.load(INVSTD + c, mask=c_mask, other=0)
        scale = invstd
        if HAS_W:
            scale = invstd * tl.load(W + c, mask=c_mask, other=0).to(ACC)
        shift = tl.zeros([BLOCK_C], ACC)
        if HAS_B:
            shift = tl.load(B + c, mask=c_mask, other=0).to(ACC)
        if s == 0:
            if HAS_W:
                tl.store(DW + c, sum_gx.to(DW.dtype.element_ty), mask=c_mask)
            if HAS_B:
                tl.store(DB + c, sum_g.to(DB.dtype.element_ty), mask=c_mask)
        inv_m = 1.0 / (tl.zeros([BLOCK_C], ACC) + M)
        mean_g = sum_g * inv_m
        mean_gx = sum_gx * inv_m
        pr = tl.arange(0, BLOCK_P)
        t0 = s * CHUNK
        for t in range(t0, tl.minimum(t0 + CHUNK, TILES)):
            n = (t // TP).to(tl.int64)
            p = ((t - n * TP) * BLOCK_P + pr).to(tl.int64)
            mask = c_mask[:, None] & (p < P)[None, :]
            x = tl.load(X + n * sxn + c[:, None] * sxc + p[None, :] * sxp, mask=mask, other=0).to(ACC)
            dy = tl.load(DY + n * sdn + c[:, None] * sdc + p[None, :] * sdp, mask=mask, other=0).to(ACC)
            y = (x - mean[:, None]) * scale[:, None] + shift[:, None]
            gz = tl.where(y <= 0, 0.0, dy)
            xhat = (x - mean[:, None]) * invstd[:, None]
            dx = scale[:, None] * (gz - mean_g[:, None] - xhat * mean_gx[:, None])
            tl.store(DX + n * son + c[:, None] * soc + p[None, :] * sop, dx.to(DX.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- references
def _per_channel(t: Tensor) -> Tensor:
    """A ``(C,)`` tensor as ``(1, C, 1, 1)``, to broadcast against ``(N, C, H, W)``."""
    return t.view(1, -1, 1, 1)


def _affine(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor, invstd: Tensor):
    """``(xhat, y, scale)``: ``xhat = (x - mean) * invstd`` and the pre-activation
    ``y = (x - mean) * scale + b``, ``scale = invstd * w``, in mean's dtype (the kernels' formulas)."""
    dt = mean.dtype
    centred = x.to(dt) - _per_channel(mean)
    scale = invstd * weight.to(dt) if weight is not None else invstd
    y = centred * _per_channel(scale)
    if bias is not None:
        y = y + _per_channel(bias.to(dt))
    return centred * _per_channel(invstd), y, scale


def bn_relu_reference(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                      running_var: Optional[Tensor], momentum: float = 0.1, eps: float = 1e-5):
    """Plain-PyTorch ``bn_relu`` (same math, same compute dtype, running statistics updated in
    place); results as :func:`bn_relu`."""
    dt = compute_dtype(x, weight)
    xa = x.to(dt)
    m = x.numel() // x.shape[1]
    mean = xa.mean(dim=(0, 2, 3))
    var = xa.var(dim=(0, 2, 3), unbiased=False)  # two passes: no cancellation
    invstd = torch.rsqrt(var + eps)
    _, y, _ = _affine(x, weight, bias, mean, invstd)
    out = torch.relu(y).to(x.dtype).contiguous(memory_format=out_memory_format(x))
    if running_mean is not None:
        running_mean.copy_((1 - momentum) * running_mean.to(dt) + momentum * mean)
        running_var.copy_((1 - momentum) * running_var.to(dt) + momentum * var * (m / (m - 1)))
    return out, mean, invstd


def bn_relu_backward_reference(grad: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                               mean: Tensor, invstd: Tensor):
    """Plain-PyTorch ``bn_relu_backward`` (explicit formulas); results as :func:`bn_relu_backward`."""
    xhat, y, scale = _affine(x, weight, bias, mean, invstd)
    gz = torch.where(y <= 0, 0, grad.to(mean.dtype))
    m = x.numel() // x.shape[1]
    sum_g, sum_gx = gz.sum(dim=(0, 2, 3)), (gz * xhat).sum(dim=(0, 2, 3))
    dx = _per_channel(scale) * (gz - _per_channel(sum_g / m) - xhat * _per_channel(sum_gx / m))
    dx = dx.to(x.dtype).contiguous(memory_format=out_memory_format(x))
    dweight = sum_gx.to(weight.dtype) if weight is not None else x.new_empty(0)
    dbias = sum_g.to(bias.dtype) if bias is not None else x.new_empty(0)
    return dx, dweight, dbias


def bn_relu_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`.selfcheck`): odd shapes, channel means away from 0,
    fp32 parameters and running statistics; the forward's results, the updated running
    statistics, then the three gradients."""
    c = 19
    x = randn((3, c, 5, 7), gen, device, torch.float32)
    x = (x + randn((1, c, 1, 1), gen, device, torch.float32, scale=3.0)).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = randn((c,), gen, device, torch.float32) + 1, randn((c,), gen, device, torch.float32, scale=0.5)
    running_mean, running_var = randn((c,), gen, device, torch.float32), randn((c,), gen, device, torch.float32).abs() + 0.5
    dy = randn(x.shape, gen, device, dtype, channels_last)

    def run(forward, backward):
        def both(x, weight, bias, running_mean, running_var, dy):
            rm, rv = running_mean.clone(), running_var.clone()
            out, mean, invstd = forward(x, weight, bias, rm, rv, 0.1, 1e-5)
            return [out, mean, invstd, rm, rv, *backward(dy, x, weight, bias, mean, invstd)]
        return both

    return Probe((x, weight, bias, running_mean, running_var, dy), run(bn_relu_forward_triton, bn_relu_backward_triton),
                 run(bn_relu_reference, bn_relu_backward_reference))


# --------------------------------------------------------------------------- launchers
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


# --------------------------------------------------------------------------- validation
def _check_inputs(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                  running_var: Optional[Tensor]) -> None:
    op = "fastmtl.bn_relu"
    check_floating(op, x=x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    check_same_device(op, x=x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"{op}: {name} must be (C={c},), got {tuple(t.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must both be given or both be None")
    if x.numel() // max(c, 1) <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {torch.Size(x.shape)}")


# --------------------------------------------------------------------------- torch.library
@torch.library.custom_op("fastmtl::bn_relu", mutates_args=("running_mean", "running_var"))
def bn_relu(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
            running_var: Optional[Tensor], momentum: float = 0.1, eps: float = 1e-5) -> Tuple[Tensor, Tensor, Tensor]:
    """Training-mode ``relu(batch_norm(x))`` with batch statistics: ``(out, mean, invstd)``.

    ``x`` ``(N, C, H, W)``; ``weight``/``bias`` ``(C,)`` or None; ``running_mean``/``running_var``
    ``(C,)`` (updated in place with ``momentum``, the unbiased variance) or both None. ``out``
    in x's dtype and layout rule; ``mean``/``invstd`` ``(C,)`` in the compute dtype.
    """
    _check_inputs(x, weight, bias, running_mean, running_var)
    if use_triton(x) and passes("bn_relu", x):
        return bn_relu_forward_triton(x, weight, bias, running_mean, running_var, momentum, eps)
    return bn_relu_reference(x, weight, bias, running_mean, running_var, momentum, eps)


@bn_relu.register_fake
def _bn_relu_fake(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    _check_inputs(x, weight, bias, running_mean, running_var)
    dt = compute_dtype(x, weight)
    return empty_out(x), x.new_empty((x.shape[1],), dtype=dt), x.new_empty((x.shape[1],), dtype=dt)


@torch.library.custom_op("fastmtl::bn_relu_backward", mutates_args=())
def bn_relu_backward(grad: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
                     invstd: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`bn_relu`: ``(dx, dweight, dbias)`` from its output gradient ``grad``
    and its ``mean``/``invstd``. ``dx`` in x's dtype and layout rule; ``dweight``/``dbias`` in
    the parameters' dtypes, empty tensors for missing parameters."""
    if use_triton(grad) and passes("bn_relu", x):
        return bn_relu_backward_triton(grad, x, weight, bias, mean, invstd)
    return bn_relu_backward_reference(grad, x, weight, bias, mean, invstd)


@bn_relu_backward.register_fake
def _bn_relu_backward_fake(grad, x, weight, bias, mean, invstd):
    param_grad = lambda p: torch.empty_like(p, memory_format=torch.contiguous_format) if p is not None else x.new_empty(0)  # noqa: E731
    return empty_out(x), param_grad(weight), param_grad(bias)


class _BatchNormReLU(torch.autograd.Function):
    """Autograd of :func:`bn_relu` (torch.library refuses an autograd formula on an op that
    mutates its inputs, so the formula lives here): ``bn_relu`` forward, ``bn_relu_backward``
    backward; no double backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        out, mean, invstd = bn_relu(x, weight, bias, running_mean, running_var, momentum, eps)
        ctx.has_params = (weight is not None, bias is not None)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return out

    @staticmethod
    def backward(ctx, grad):
        dx, dweight, dbias = bn_relu_backward(grad, *ctx.saved_tensors)
        return dx, dweight if ctx.has_params[0] else None, dbias if ctx.has_params[1] else None, None, None, None, None


def batch_norm_relu(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                    running_var: Optional[Tensor], momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``relu(F.batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum,
    eps))`` through :func:`bn_relu` (the running statistics updated in place), differentiable
    wrt ``x``, ``weight`` and ``bias``; see :func:`bn_relu` for shapes and dtypes."""
    return _BatchNormReLU.apply(x, weight, bias, running_mean, running_var, momentum, eps)
