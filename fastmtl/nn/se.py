"""Fused squeeze-and-excitation: :class:`FusedSqueezeExcitation` (drop-in for
:class:`fastmtl.layers.SqueezeExcitation`) and :class:`FusedSEBlock` (any SE
block, its children kept, that :func:`fastmtl.nn.fuse` recognised)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastmtl.kernels.se_scale import se_scale
from fastmtl import layers


def se_tail(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor],
            identity: Optional[Tensor] = None, act: str = "relu", gate: str = "sigmoid") -> Tensor:
    """``fastmtl::se_scale`` with the reference's dtype promotion of ``x`` and ``identity``."""
    if identity is not None and identity.dtype != x.dtype:
        dtype = torch.promote_types(x.dtype, identity.dtype)
        x, identity = x.to(dtype), identity.to(dtype)
    return se_scale(x, w1, b1, w2, b2, identity, act, gate)


class FusedSqueezeExcitation(layers.SqueezeExcitation):
    """``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` as one op, ``fastmtl::se_scale``.

    ``FusedSqueezeExcitation(channels, reduction=16)``: same constructor, parameters and
    ``state_dict`` keys (``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``) as the
    reference; ``fc1``/``fc2`` are 1x1 ``Conv2d`` layers.

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
        return se_tail(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias, identity)


class FusedSEBlock(nn.Module):
    """An SE block of any library run as ``fastmtl::se_scale``, with the block's own children.

    ``FusedSEBlock(block, weights, act, gate)``: takes over ``block``'s child modules
    under their names (so the ``state_dict`` keys and tensors are the block's) and its
    train/eval flag. ``weights`` are the paths of ``(w1, b1, w2, b2)`` inside the block
    (``"fc1.weight"``, ``"fc.0.bias"``, ...; None for a missing bias), read at every call, so
    ``.to()``, ``load_state_dict`` and optimizers act on the block's parameters as before.
    ``act`` / ``gate`` (kept as :attr:`fused_act` / :attr:`fused_gate`): names from
    :data:`fastmtl.kernels.se_scale.ACTIVATIONS` / ``GATES``.

    ``forward(x, identity=None)``: ``x`` ``(N, C, H, W)`` -> ``x * gate(W2 act(W1 mean_hw(x) + b1) + b2)``;
    with ``identity`` ``relu(that + identity)`` in the same pass (:attr:`fuses_residual`).
    """

    fuses_residual = True

    def __init__(self, block: nn.Module, weights, act: str, gate: str):
        super().__init__()
        self._modules = OrderedDict(block._modules)
        self.training = block.training
        # not ``act``/``gate``: timm's blocks have children with those names
        self._fused_weights, self.fused_act, self.fused_gate = tuple(weights), act, gate
        self._fused_from = type(block).__qualname__

    def _weight(self, path: Optional[str]) -> Optional[Tensor]:
        if path is None:
            return None
        owner, _, name = path.rpartition(".")
        return getattr(self.get_submodule(owner), name)

    def forward(self, x: Tensor, identity: Optional[Tensor] = None) -> Tensor:
        return se_tail(x, *(self._weight(p) for p in self._fused_weights), identity, self.fused_act, self.fused_gate)

    def extra_repr(self) -> str:
        return f"fused={self._fused_from}, act={self.fused_act}, gate={self.fused_gate}"
