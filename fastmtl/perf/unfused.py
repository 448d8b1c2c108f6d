"""The unfused paths of the op bench's ``eager`` and ``compile`` rows: each fused op's part of the
model as fastmtl's reference modules run it under CUDA autocast (activations stay in their half
dtype, fp32 weights cast to it per call, as autocast does; BatchNorm, on no autocast list, takes
the half-precision conv output with its fp32 parameters as they are), not the fp32 numerical
references of :mod:`fastmtl.kernels`. Same signatures as the ops; ``tests/test_bench.py`` checks
each against its module under autocast."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def se_block_tail(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
                  identity: Optional[Tensor] = None, act: str = "relu", gate: str = "sigmoid") -> Tensor:
    """:class:`fastmtl.layers.SqueezeExcitation` then the ResNet block tail ``relu(. + identity)``
    (:mod:`fastmtl.models.encoder`), in ``x``'s dtype. ``x``, ``identity`` ``(N, C, H, W)``; ``w1``
    ``(Cr, C, 1, 1)``, ``w2`` ``(C, Cr, 1, 1)`` (the 1x1 convs' weights); relu / sigmoid only."""
    if (act, gate) != ("relu", "sigmoid"):
        raise ValueError(f"the unfused SE path is the model's relu / sigmoid block, got act={act!r}, gate={gate!r}")
    dt = x.dtype
    cast = (lambda t: None if t is None else t.to(dt))
    s = x.mean(dim=(2, 3), keepdim=True)
    y = x * torch.sigmoid(F.conv2d(F.relu(F.conv2d(s, cast(w1), cast(b1))), cast(w2), cast(b2)))
    return y if identity is None else F.relu(y + identity)


def gated_residual(f: Tensor, a: Tensor, r: Optional[Tensor] = None) -> Tensor:
    """:class:`fastmtl.layers.SelfAttention`'s ``conv(x) * sigmoid(attention(x))`` (+ the
    residual) after its two convolutions ``f``, ``a`` ``(N, C, H, W)``, in their dtype."""
    out = f * torch.sigmoid(a)
    return out if r is None else r + out


def batch_norm_then_relu(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                         running_var: Optional[Tensor], momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``nn.BatchNorm2d`` in training mode (batch statistics; the running statistics updated in
    place) then ``nn.ReLU(inplace=True)``, the pair of :func:`fastmtl.layers.conv_bn_relu` and the
    ResNet blocks, on ``x`` ``(N, C, H, W)`` (the conv's output, in its dtype and layout) with
    ``(C,)`` fp32 ``weight``, ``bias`` and running statistics; the result in x's dtype and layout."""
    return F.relu(F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps), inplace=True)
