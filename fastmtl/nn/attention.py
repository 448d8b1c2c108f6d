"""Fused spatial attention ``conv(x) * sigmoid(attention(x))``: :class:`FusedSelfAttention` (drop-in
for :class:`fastmtl.layers.SelfAttention`) and :class:`FusedGatedConv` (any such block,
its children kept, that :func:`fastmtl.nn.fuse` recognised)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastmtl.kernels.sigmoid_gate import sigmoid_gate_halves
from fastmtl import layers


def gated_conv(x: Tensor, features: Tensor, attention: Tensor, stride=1, padding=1, dilation=1,
               residual: Optional[Tensor] = None) -> Tensor:
    """``conv(x, features) * sigmoid(conv(x, attention))`` (+ ``residual``) as ONE bias-free
    convolution with the two weights concatenated (``2 * out`` channels) and one
    ``fastmtl::sigmoid_gate_halves`` on its output (the halves read in place; the gradient of the
    convolution's output comes back as one tensor in its layout).

    ``x`` ``(N, in, H, W)``; weights ``(out, in, kh, kw)``; ``residual`` the output's shape.
    NCHW or channels_last (the output follows the convolution's layout).
    """
    y = F.conv2d(x, torch.cat([features, attention]), None, stride, padding, dilation)
    if residual is not None and residual.dtype != y.dtype:  # as the reference's promotion
        dtype = torch.promote_types(y.dtype, residual.dtype)
        y, residual = y.to(dtype), residual.to(dtype)
    return sigmoid_gate_halves(y, residual)


class FusedSelfAttention(layers.SelfAttention):
    """``conv(x) * sigmoid(attention(x))`` (+ ``residual``) with one convolution and one gate op.

    ``FusedSelfAttention(in_ch, out_ch, attention_init="zero")``: same constructor, parameters
    (``conv.weight``, ``attention.weight``, bias-free 3x3) and ``state_dict`` as the reference.
    ``forward(x (N, in_ch, H, W), residual=None (N, out_ch, H, W))`` -> ``(N, out_ch, H, W)``;
    see :func:`gated_conv`.
    """

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        return gated_conv(x, self.conv.weight, self.attention.weight, residual=residual)


class FusedGatedConv(nn.Module):
    """A ``conv(x) * sigmoid(conv'(x))`` block of any library run as :func:`gated_conv`.

    ``FusedGatedConv(block, weights, stride, padding, dilation)``: takes over ``block``'s child
    modules under their names (the ``state_dict`` is the block's) and its train/eval flag;
    ``weights`` are the paths of the features and attention conv weights inside the block
    (e.g. ``("conv.weight", "attention.0.weight")``), read at every call.

    ``forward(x, residual=None)``: ``x`` ``(N, in, H, W)`` -> ``(N, out, H', W')``.
    """

    def __init__(self, block: nn.Module, weights: Tuple[str, str], stride, padding, dilation):
        super().__init__()
        self._modules = OrderedDict(block._modules)
        self.training = block.training
        self._fused_weights, self._fused_geometry = tuple(weights), (stride, padding, dilation)
        self._fused_from = type(block).__qualname__

    def _weight(self, path: str) -> Tensor:
        owner, _, name = path.rpartition(".")
        return getattr(self.get_submodule(owner), name)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        features, attention = (self._weight(p) for p in self._fused_weights)
        return gated_conv(x, features, attention, *self._fused_geometry, residual=residual)

    def extra_repr(self) -> str:
        return f"fused={self._fused_from}"
