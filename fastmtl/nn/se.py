"""Fused squeeze-and-excitation (drop-in for :class:`fastmtl.models.heads.SqueezeExcitation`)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from fastmtl.kernels.se_scale import se_scale
from fastmtl.models import heads


class SqueezeExcitation(heads.SqueezeExcitation):
    """``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` as one op, ``fastmtl::se_scale``.

    ``SqueezeExcitation(channels, reduction=16)``: same constructor, parameters and
    ``state_dict`` keys (``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``) as the
    reference. ``fc1``/``fc2`` are 1x1 ``Conv2d`` layers; :func:`fastmtl.nn.fuse` may hand
    the module ``Linear`` ones instead (taken over from a foreign SE block), which work the same.

    ``forward(x, identity=None)``: ``x`` ``(N, C, H, W)`` (NCHW or channels_last) -> same shape;
    with ``identity`` (same shape) it returns ``relu(se(x) + identity)``, the ResNet block tail,
    in the same pass (the encoder checks :attr:`fuses_residual`). Triton kernels or the
    plain-PyTorch reference per ``FASTMTL_KERNELS``.
    """

    fuses_residual = True

    def scale(self, x: Tensor) -> Tensor:
        """Per-channel gate ``(N, C, 1, 1)`` in (0, 1) (plain PyTorch)."""
        s = x.mean(dim=(2, 3))
        h = F.relu(F.linear(s, self.fc1.weight.flatten(1), self.fc1.bias))
        return torch.sigmoid(F.linear(h, self.fc2.weight.flatten(1), self.fc2.bias))[:, :, None, None]

    def forward(self, x: Tensor, identity: Optional[Tensor] = None) -> Tensor:
        if identity is not None and identity.dtype != x.dtype:  # as the reference's promotion
            dtype = torch.promote_types(x.dtype, identity.dtype)
            x, identity = x.to(dtype), identity.to(dtype)
        return se_scale(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, identity)
