"""Plain-PyTorch references of ``silog_stats`` and its backward (the CPU path and the
numerical reference of the kernels), and the clamp bounds and shape rule both paths share."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._utils import compute_dtype


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
