"""Loss modules backed by fastmtl's kernels."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from fastmtl.kernels.silog import silog_from_stats, silog_stats


class SILogLoss(nn.Module):
    """Scale-invariant log loss (Eigen et al.), averaged over images with a valid pixel.

    Per image, over valid pixels (``target`` finite and > 0), ``d = log(target) - log(pred)``
    after clamping ``pred`` to ``[max(min_depth, eps), max_depth]`` and flooring ``target``
    at ``eps`` (see :mod:`fastmtl.kernels.silog`)::

        v = max(mean(d^2) - lam * mean(d)^2, 0)
        value = scale * sqrt(v + sqrt_eps)    (root=True, the default)
        value = scale * v                     (root=False: the un-rooted variance)

    ``sqrt_eps`` (default 1e-8) keeps the gradient finite where ``v = 0`` (a perfect or
    one-pixel image); it shifts the value by at most ``scale * 1e-4``. ``scale=100, sqrt_eps=0``
    gives the SI-logRMSE metric. Returns the mean of ``value`` over the images with at least
    one valid pixel, or a zero still connected to ``pred``'s graph when there is none.

    ``pred`` in metres, or log-metres with ``log_input=True``. With metres, predictions
    outside the clamp range get no gradient: predict log-depth or use a positive activation.

    Shapes: ``pred``, ``target`` ``(N, 1, H, W)`` or ``(N, H, W)``; returns a 0-d fp32 tensor
    (fp64 for fp64 inputs). Gradients flow to ``pred`` only.
    """

    def __init__(
        self, lam: float = 1.0, log_input: bool = False, min_depth: Optional[float] = None,
        max_depth: Optional[float] = None, eps: float = 0.01, root: bool = True, sqrt_eps: float = 1e-8,
        scale: float = 1.0,
    ):
        super().__init__()
        self.lam, self.log_input, self.root, self.sqrt_eps, self.scale = lam, log_input, root, sqrt_eps, scale
        self.min_depth, self.max_depth, self.eps = min_depth, max_depth, eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        stats = silog_stats(pred, target, self.min_depth, self.max_depth, self.eps, self.log_input)
        values = silog_from_stats(stats, self.lam, root=self.root, sqrt_eps=self.sqrt_eps, scale=self.scale)
        valid = stats[:, 2] > 0
        return torch.where(valid, values, 0).sum() / valid.sum().clamp_min(1)

    def extra_repr(self) -> str:
        return (f"lam={self.lam}, log_input={self.log_input}, min_depth={self.min_depth}, max_depth={self.max_depth}, "
                f"eps={self.eps}, root={self.root}, sqrt_eps={self.sqrt_eps}, scale={self.scale}")
