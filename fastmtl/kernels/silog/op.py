"""The ``torch.library`` ops ``fastmtl::silog_stats`` and ``fastmtl::silog_stats_backward``
(input checks, dispatch to the Triton launchers or the references, fake kernels, autograd), and
the SI-log values from their sums (:func:`silog_from_stats`, :func:`silog`).

The launchers are looked up on :mod:`.launch` at every call, as the self-check probe does, so
that replacing one there (tests) reaches every caller.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._utils import check_floating, check_same_device, compute_dtype
from ..dispatch import use_triton
from ..selfcheck import passes
from . import launch
from .reference import silog_stats_backward_reference, silog_stats_reference


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


@torch.library.custom_op("fastmtl::silog_stats", mutates_args=())
def silog_stats(
    pred: Tensor, target: Tensor, min_depth: Optional[float] = None, max_depth: Optional[float] = None,
    eps: float = 0.01, log_input: bool = False,
) -> Tensor:
    """Per-image ``(sum d, sum d^2, count)`` ``(N, 3)`` over valid pixels (see the package
    docstring, :mod:`fastmtl.kernels.silog`); fp32, or fp64 if an input is fp64. Differentiable
    wrt ``pred``."""
    _check_inputs(pred, target, eps)
    if use_triton(pred) and passes("silog_stats", pred):
        return launch.silog_stats_triton(pred, target, min_depth, max_depth, eps, log_input)
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
        return launch.silog_stats_backward_triton(grad_stats, pred, target, min_depth, max_depth, eps, log_input)
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
