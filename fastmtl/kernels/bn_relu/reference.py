"""Plain-PyTorch references of ``bn_relu`` and its backward (the CPU path and the numerical
reference of the kernels)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._utils import compute_dtype, out_memory_format


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
    place); results as :func:`.op.bn_relu`."""
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
    """Plain-PyTorch ``bn_relu_backward`` (explicit formulas); results as :func:`.op.bn_relu_backward`."""
    xhat, y, scale = _affine(x, weight, bias, mean, invstd)
    gz = torch.where(y <= 0, 0, grad.to(mean.dtype))
    m = x.numel() // x.shape[1]
    sum_g, sum_gx = gz.sum(dim=(0, 2, 3)), (gz * xhat).sum(dim=(0, 2, 3))
    dx = _per_channel(scale) * (gz - _per_channel(sum_g / m) - xhat * _per_channel(sum_gx / m))
    dx = dx.to(x.dtype).contiguous(memory_format=out_memory_format(x))
    dweight = sum_gx.to(weight.dtype) if weight is not None else x.new_empty(0)
    dbias = sum_g.to(bias.dtype) if bias is not None else x.new_empty(0)
    return dx, dweight, dbias
