"""Fused ASPP: the projection reads the branch outputs in place (no five-branch concat).

:class:`FusedASPP` is a drop-in for :class:`fastmtl.layers.ASPP` (a subclass: same
constructor, parameters, buffers and ``state_dict`` keys, same function). The branch
conv-BN-ReLUs and the image-pooling branch run as before; the projection runs as
``fastmtl::aspp_project`` (see :mod:`fastmtl.kernels.aspp`):

* the pooled branch, constant over ``H x W``, becomes a per-sample bias
  ``pooled (N, out) @ Wp_pool^T``;
* eval mode (BatchNorm with running statistics): BatchNorm + ReLU are folded into the GEMM's
  epilogue;
* training mode: the GEMM (+ bias) runs fused, then the module's own BatchNorm (batch
  statistics, running-stat update), ReLU and dropout run exactly as in the reference.

When :func:`fastmtl.kernels.use_triton` is false for the input (``FASTMTL_KERNELS=reference``,
or CPU tensors under ``auto``) ``forward`` is the reference concat + project.
Input ``(N, in_ch, H, W)``, output ``(N, out_ch, H, W)``, NCHW or channels_last.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from fastmtl.kernels.aspp import aspp_project
from fastmtl.kernels.dispatch import use_triton
from fastmtl import layers


def _fold_batch_norm(bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """Eval-mode BatchNorm as ``y * scale + shift``, both ``(C,)`` (differentiable in weight/bias)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


class FusedASPP(layers.ASPP):
    """Atrous spatial pyramid pooling with a fused projection.

    ``FusedASPP(in_ch, out_ch=256, rates=(6, 12, 18), dropout=0.0)``; see :class:`fastmtl.layers.ASPP`.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not use_triton(x):
            return super().forward(x)
        branches = [conv(x) for conv in self.convs]
        pooled = self.pool(x).flatten(1)  # (N, out)
        conv, bn, relu, dropout = self.project
        dtype = branches[0].dtype
        split = len(branches) * branches[0].shape[1]
        weight = conv.weight.flatten(1).to(dtype)  # (out, (K+1)*out)
        bias = pooled.to(dtype) @ weight[:, split:].t()  # (N, out)
        weight = weight[:, :split]
        if bn.training or (bn.running_mean is None and bn.running_var is None):  # batch statistics
            return dropout(relu(bn(aspp_project(branches, weight, bias))))
        scale, shift = _fold_batch_norm(bn)
        return dropout(aspp_project(branches, weight, bias, scale, shift, relu=True))
