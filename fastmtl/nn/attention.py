"""Fused spatial self-attention (drop-in for :class:`fastmtl.models.heads.SelfAttention`)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastmtl.kernels.sigmoid_gate import sigmoid_gate
from fastmtl.models import heads


class SelfAttention(heads.SelfAttention):
    """``conv(x) * sigmoid(attention(x))`` (+ ``residual``) with one convolution and one gate op.

    ``SelfAttention(in_ch, out_ch, attention_init="zero")``: same constructor, parameters
    (``conv.weight``, ``attention.weight``, bias-free 3x3) and ``state_dict`` as the reference.
    ``forward`` convolves once with the two weights concatenated (``2 * out_ch`` output
    channels) and gates the two channel halves -- views of that one tensor -- with
    ``fastmtl::sigmoid_gate``, adding ``residual`` in the same pass.

    ``forward(x (N, in_ch, H, W), residual=None (N, out_ch, H, W))`` -> ``(N, out_ch, H, W)``;
    NCHW or channels_last (the output follows the convolution's layout).
    """

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        c = self.conv.out_channels
        y = F.conv2d(x, torch.cat([self.conv.weight, self.attention.weight]), padding=1)
        if residual is not None and residual.dtype != y.dtype:  # as the reference's promotion
            dtype = torch.promote_types(y.dtype, residual.dtype)
            y, residual = y.to(dtype), residual.to(dtype)
        return sigmoid_gate(y[:, :c], y[:, c:], residual)
