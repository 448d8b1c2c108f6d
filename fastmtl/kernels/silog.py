"""Scale-invariant log error (SI-logRMSE metric, Eigen et al. loss): per-image sums in one pass.

Per image ``n``, over its valid pixels (``target`` finite and ``> 0``)::

    p = clamp(pred, lo, hi)       lo = max(min_depth, eps), hi = max(max_depth, lo)
    d = log(max(target, eps)) - log(p)          (log_input: d = log(max(target, eps)) - clamp(pred, log lo, log hi))
    stats[n] = (sum d, sum d^2, count)

That clamp is ``max(clamp(pred, min_depth, max_depth), eps)`` written as one clamp (the two
agree everywhere; their gradients differ only on the boundary points, where this one passes
the gradient like ``torch.clamp`` does). ``target`` is always in metres; ``pred`` is metres,
or log-metres with ``log_input=True``.

From the sums: ``mean(d^2) - lam * mean(d)^2`` (``lam=1``: the SI variance). The metric is
``100 * sqrt(max(that, 0))`` per image, averaged over images with at least one valid pixel
(:func:`silog`). For training use :func:`silog_from_stats` with ``sqrt_eps > 0`` (the gradient
of ``sqrt`` at 0 is infinite; ``sqrt_eps=1e-8`` biases the value by at most 1e-4) or
``root=False`` (the un-rooted variance, smooth everywhere). Gradients flow to ``pred`` only.

Shapes and layouts: ``pred``, ``target`` ``(N, 1, H, W)`` or ``(N, H, W)``, same shape, any
strides whose H and W merge (else copied); dtypes fp16/bf16/fp32/fp64, may differ between the
two (e.g. bf16 predictions, fp32 targets). Sums are fp32 (fp64 if either input is fp64),
reduced in fixed-order chunks (deterministic, no atomics). The clamp bounds and ``eps`` reach
the Triton kernels as fp32 scalars.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._utils import (
    check_floating, check_same_device, compute_dtype, merge_hw, on_input_device, pow2_block, split_reduction,
    tl_dtype,
)
from .dispatch import HAS_TRITON, use_triton
from .selfcheck import Probe, passes, randn

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _log_ratio(p, t, LO, HI, EPS, INF, LOG_INPUT: tl.constexpr):
        """``(d, valid, pc)`` per pixel: ``valid = t finite and > 0``, ``pc = clamp(p, LO, HI)``
        (NaN kept), ``d = log(max(t, EPS)) - log(pc)`` (``- pc`` when LOG_INPUT), 0 where not
        valid. Mirrors :func:`_log_ratio_reference`."""
        valid = (t > 0) & (t < INF)
        t = tl.where(valid, t, 1.0)
        pc = tl.where(p < LO, LO, tl.where(p > HI, HI, p))
        if LOG_INPUT:
            lp = pc
        else:
            lp = tl.log(pc)
        d = tl.where(valid, tl.log(tl.maximum(t, EPS)) - lp, 0.0)
        return d, valid, pc

    @triton.jit
    def _silog_fwd_kernel(
        P, T, PART,
        HW, CHUNK, spn, sphw, stn, sthw,
        LO, HI, EPS, INF,
        LOG_INPUT: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """``PART[n, chunk] = (sum d, sum d^2, count)`` over one chunk of the H*W pixels.
        Grid ``(chunks, N)``; ``PART`` ``(N, chunks, 3)`` contiguous. LO/HI are already logs
        when LOG_INPUT."""
        pid_s = tl.program_id(0)
        n = tl.program_id(1).to(tl.int64)
        acc_d = tl.zeros([BLOCK], ACC)
        acc_d2 = tl.zeros([BLOCK], ACC)
        acc_n = tl.zeros([BLOCK], ACC)
        i0 = pid_s.to(tl.int64) * CHUNK
        for off in range(0, CHUNK, BLOCK):
            i = i0 + off + tl.arange(0, BLOCK)
            m = i < HW
            t = tl.load(T + n * stn + i * sthw, mask=m, other=0).to(ACC)  # masked lanes: not valid
            p = tl.load(P + n * spn + i * sphw, mask=m, other=1).to(ACC)
            d, valid, _ = _log_ratio(p, t, LO, HI, EPS, INF, LOG_INPUT)
            acc_d += d
            acc_d2 += d * d
            acc_n += valid.to(ACC)
        dst = PART + (n * tl.num_programs(0) + pid_s) * 3
        tl.store(dst, tl.sum(acc_d, axis=0))
        tl.store(dst + 1, tl.sum(acc_d2, axis=0))
        tl.store(dst + 2, tl.sum(acc_n, axis=0))

    @triton.jit
    def _silog_bwd_kernel(
        GS, P, T, DP,
        HW, spn, sphw, stn, sthw, sdn, sdhw,
        LO, HI, EPS, INF,
        LOG_INPUT: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
    ):
        """``DP = valid * inside * (GS[n, 0] + 2 GS[n, 1] d) * dd/dpred``; ``GS`` ``(N, 3)``
        contiguous. Grid ``(cdiv(HW, BLOCK), N)``."""
        n = tl.program_id(1).to(tl.int64)
        i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = i < HW
        g1 = tl.load(GS + n * 3).to(ACC)
        g2 = tl.load(GS + n * 3 + 1).to(ACC)
        t = tl.load(T + n * stn + i * sthw, mask=m, other=0).to(ACC)  # masked lanes: not valid
        p = tl.load(P + n * spn + i * sphw, mask=m, other=1).to(ACC)
        d, valid, pc = _log_ratio(p, t, LO, HI, EPS, INF, LOG_INPUT)
        keep = valid & (p >= LO) & (p <= HI)
        dp = -(g1 + 2 * g2 * d)
        if not LOG_INPUT:
            dp = dp / pc
        tl.store(DP + n * sdn + i * sdhw, tl.where(keep, dp, 0.0).to(DP.dtype.element_ty), mask=m)


def _bounds(min_depth: Optional[float], max_depth: Optional[float], eps: float, log_input: bool) -> Tuple[float, float]:
    """The clamp bounds of ``pred`` (in log space when ``log_input``)."""
    lo = max(min_depth if min_depth is not None else 0.0, eps)
    hi = max(max_depth if max_depth is not None else math.inf, lo)
    if log_input:
        return (math.log(lo) if lo > 0 else -math.inf), math.log(hi)
    return lo, hi


def _as_nhw(t: Tensor) -> Tensor:
    """``(N, 1, H, W)`` or ``(N, H, W)`` -> the ``(N, H, W)`` view."""
    return t[:, 0] if t.dim() == 4 else t


# --------------------------------------------------------------------------- references
def _log_ratio_reference(p: Tensor, t: Tensor, lo: float, hi: float, eps: float, log_input: bool):
    """``(d, valid, pc)`` as the kernels' ``_log_ratio``, in torch."""
    valid = torch.isfinite(t) & (t > 0)
    pc = p.clamp(lo, hi)
    d = torch.where(valid, torch.log(t.clamp_min(eps)) - (pc if log_input else torch.log(pc)), 0)
    return d, valid, pc


def silog_stats_reference(
    pred: Tensor, target: Tensor, min_depth: Optional[float] = None, max_depth: Optional[float] = None,
    eps: float = 0.01, log_input: bool = False,
) -> Tensor:
    """Plain-PyTorch ``silog_stats``: ``(N, 3)`` = (sum d, sum d^2, count) in the compute dtype."""
    dt = compute_dtype(pred, target)
    p, t = _as_nhw(pred).to(dt), _as_nhw(target).to(dt)
    d, valid, _ = _log_ratio_reference(p, t, *_bounds(min_depth, max_depth, eps, log_input), eps, log_input)
    return torch.stack([d.sum((1, 2)), (d * d).sum((1, 2)), valid.sum((1, 2)).to(dt)], dim=1)


def silog_stats_backward_reference(
    grad_stats: Tensor, pred: Tensor, target: Tensor, min_depth: Optional[float] = None,
    max_depth: Optional[float] = None, eps: float = 0.01, log_input: bool = False,
) -> Tensor:
    """Plain-PyTorch ``silog_stats_backward``: d(loss)/d(pred), pred's shape and dtype, contiguous."""
    dt = compute_dtype(pred, target)
    p, t = _as_nhw(pred).to(dt), _as_nhw(target).to(dt)
    lo, hi = _bounds(min_depth, max_depth, eps, log_input)
    d, valid, pc = _log_ratio_reference(p, t, lo, hi, eps, log_input)
    keep = valid & (p >= lo) & (p <= hi)
    g = grad_stats.to(dt)
    dp = -(g[:, 0, None, None] + 2 * g[:, 1, None, None] * d)
    if not log_input:
        dp = dp / pc
    return torch.where(keep, dp, 0).to(pred.dtype).reshape(pred.shape).contiguous()



def silog_stats_probe(device, dtype: torch.dtype, channels_last: bool, gen: torch.Generator) -> Probe:
    """The self-check problem (:mod:`.selfcheck`): log-depth ``pred`` in ``dtype`` with fp32
    metric targets (a fifth invalid, some outside the clamp) at an odd shape; the stats then
    d(pred). ``channels_last`` changes nothing: an (N, 1, H, W) tensor has one memory layout."""
    target = torch.rand((3, 1, 9, 13), generator=gen, device=device) * 79 + 1
    invalid = torch.rand(target.shape, generator=gen, device=device) < 0.2
    target = torch.where(invalid, torch.zeros_like(target), target)
    pred = (target.clamp_min(1).log() + randn(target.shape, gen, device, torch.float32, scale=0.3)).to(dtype)
    grad_stats = randn((3, 3), gen, device, torch.float32)
    options = (2.0, 60.0, 0.01, True)  # min_depth, max_depth, eps, log_input

    def run(forward, backward):
        def both(pred, target, grad_stats):
            return [forward(pred, target, *options), backward(grad_stats, pred, target, *options)]
        return both

    return Probe((pred, target, grad_stats), run(silog_stats_triton, silog_stats_backward_triton),
                 run(silog_stats_reference, silog_stats_backward_reference))

# --------------------------------------------------------------------------- launchers
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


# --------------------------------------------------------------------------- validation
def _check_inputs(pred: Tensor, target: Tensor, eps: float) -> None:
    op = "fastmtl.silog_stats"
    check_floating(op, pred=pred, target=target)
    check_same_device(op, pred=pred, target=target)
    if not (pred.dim() == 3 or (pred.dim() == 4 and pred.shape[1] == 1)):
        raise ValueError(f"{op}: pred must be (N, 1, H, W) or (N, H, W), got shape {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"{op}: target must have pred's shape {tuple(pred.shape)}, got {tuple(target.shape)}")
    if not eps >= 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps}")


# --------------------------------------------------------------------------- torch.library
@torch.library.custom_op("fastmtl::silog_stats", mutates_args=())
def silog_stats(
    pred: Tensor, target: Tensor, min_depth: Optional[float] = None, max_depth: Optional[float] = None,
    eps: float = 0.01, log_input: bool = False,
) -> Tensor:
    """Per-image ``(sum d, sum d^2, count)`` ``(N, 3)`` over valid pixels (see the module docstring);
    fp32, or fp64 if an input is fp64. Differentiable wrt ``pred``."""
    _check_inputs(pred, target, eps)
    if use_triton(pred) and passes("silog_stats", pred):
        return silog_stats_triton(pred, target, min_depth, max_depth, eps, log_input)
    return silog_stats_reference(pred, target, min_depth, max_depth, eps, log_input)


@silog_stats.register_fake
def _silog_stats_fake(pred, target, min_depth=None, max_depth=None, eps=0.01, log_input=False):
    _check_inputs(pred, target, eps)
    return pred.new_empty((pred.shape[0], 3), dtype=compute_dtype(pred, target))


@torch.library.custom_op("fastmtl::silog_stats_backward", mutates_args=())
def silog_stats_backward(
    grad_stats: Tensor, pred: Tensor, target: Tensor, min_depth: Optional[float], max_depth: Optional[float],
    eps: float, log_input: bool,
) -> Tensor:
    """Gradient wrt ``pred`` of :func:`silog_stats` for ``grad_stats`` ``(N, 3)`` (the count
    column's gradient is ignored); pred's shape and dtype, contiguous."""
    if use_triton(pred) and passes("silog_stats", pred):
        return silog_stats_backward_triton(grad_stats, pred, target, min_depth, max_depth, eps, log_input)
    return silog_stats_backward_reference(grad_stats, pred, target, min_depth, max_depth, eps, log_input)


@silog_stats_backward.register_fake
def _silog_stats_backward_fake(grad_stats, pred, target, min_depth, max_depth, eps, log_input):
    return torch.empty(pred.shape, dtype=pred.dtype, device=pred.device)


def _setup_context(ctx, inputs, output):
    pred, target, *ctx.options = inputs
    ctx.save_for_backward(pred, target)


def _autograd(ctx, grad_stats):
    pred, target = ctx.saved_tensors
    return (silog_stats_backward(grad_stats, pred, target, *ctx.options),) + (None,) * 5


silog_stats.register_autograd(_autograd, setup_context=_setup_context)


# --------------------------------------------------------------------------- values from the sums
def silog_from_stats(stats: Tensor, lam: float = 1.0, *, root: bool = True, sqrt_eps: float = 0.0, scale: float = 100.0) -> Tensor:
    """Per-image values ``(N,)`` from ``stats`` ``(N, 3)``; NaN for images without valid pixels.

    ``v = max(mean(d^2) - lam * mean(d)^2, 0)``; returns ``scale * sqrt(v + sqrt_eps)`` if
    ``root`` else ``scale * v``. The NaN entries carry no gradient (mask them with
    ``torch.where``, not by multiplying).
    """
    count = stats[:, 2]
    valid = count > 0
    safe = count.clamp_min(1)
    mean_d, mean_d2 = stats[:, 0] / safe, stats[:, 1] / safe
    v = (mean_d2 - lam * mean_d * mean_d).clamp_min(0)
    if root:
        v = torch.sqrt(torch.where(valid, v, 1) + sqrt_eps)
    return torch.where(valid, scale * v, math.nan)


def silog(
    pred: Tensor, target: Tensor, lam: float = 1.0, *, log_input: bool = False, min_depth: Optional[float] = None,
    max_depth: Optional[float] = None, eps: float = 0.01,
) -> Tensor:
    """SI-logRMSE per image ``(N,)``: ``100 * sqrt(max(mean(d^2) - lam mean(d)^2, 0))``; NaN
    for images without a valid pixel. The metric: MiniScapes uses ``min_depth=4,
    max_depth=300``; average with ``nanmean``."""
    return silog_from_stats(silog_stats(pred, target, min_depth, max_depth, eps, log_input), lam)
