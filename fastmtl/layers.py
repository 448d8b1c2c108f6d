"""Reference (plain PyTorch) building blocks: conv-BN-ReLU, bilinear upsampling, squeeze-excitation,
the distillation's spatial attention and ASPP.

Their fused twins in :mod:`fastmtl.nn` (``Fused*``) have the same constructor arguments,
parameters and ``state_dict`` keys, so checkpoints move freely between fused and unfused models.
All tensors are ``(N, C, H, W)``; any memory format is accepted.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_INITS = ("zero", "default")


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    """Bias-free conv + BatchNorm + ReLU. ``state_dict`` keys: ``0.weight``, ``1.*``."""
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def bn_relu(bn: nn.Module, x: torch.Tensor, relu: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``relu(bn(x))``, or ``bn(x)`` when ``bn`` already applies the ReLU (a
    :class:`fastmtl.nn.FusedBatchNormReLU`: its ``fuses_relu`` is true). For blocks that list
    the BatchNorms followed by a ReLU in ``relu_after``, which :func:`fastmtl.nn.fuse` swaps."""
    return bn(x) if getattr(bn, "fuses_relu", False) else relu(bn(x))


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` to ``(N, C, *size)`` (align_corners=False), in the
    autocast dtype while autocast is on for ``x``'s device (CUDA autocast would run it in fp32:
    an fp32 copy of every upsampled tensor, and of the concatenation after it, cast back to bf16);
    in ``x``'s dtype otherwise. Keeps ``x``'s memory format."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    device = x.device.type
    if torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            return F.interpolate(x.to(torch.get_autocast_dtype(device)), size=tuple(size), mode="bilinear",
                                 align_corners=False)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al.): ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``.

    ``fc1``: 1x1 conv ``C -> max(1, C // reduction)`` with bias; ``fc2``: back to ``C`` with
    bias (the same parameter names as torchvision's ``SqueezeExcitation``).
    Input and output ``(N, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel gate ``(N, C, 1, 1)`` in (0, 1)."""
        s = x.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(s))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale(x)


class SelfAttention(nn.Module):
    """Spatial attention of the task-distillation model: ``conv(x) * sigmoid(attention(x))``.

    Both convs are bias-free 3x3 ``in_ch -> out_ch``. ``attention_init="zero"`` is the
    template's initialisation (the mask starts at 0.5 everywhere; the weights still train);
    ``"default"`` keeps PyTorch's default init (the report's "attention correction", which is
    really this init change).
    """

    def __init__(self, in_ch: int, out_ch: int, attention_init: str = "zero"):
        super().__init__()
        if attention_init not in ATTENTION_INITS:
            raise ValueError(f"attention_init must be one of {ATTENTION_INITS}, got {attention_init!r}")
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.attention = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        if attention_init == "zero":
            nn.init.zeros_(self.attention.weight)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x (N, in_ch, H, W)`` -> ``(N, out_ch, H, W)``; adds ``residual`` (same shape) if given."""
        out = self.conv(x) * torch.sigmoid(self.attention(x))
        return out if residual is None else residual + out


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3).

    Branches (all conv-BN-ReLU, bias-free convs, ``in_ch -> out_ch``): ``convs[0]`` 1x1,
    ``convs[1:]`` 3x3 with dilation ``rates[i]``, ``pool`` global average pool + 1x1.
    The ``(len(rates) + 2) * out_ch`` concat goes through ``project`` (1x1 + BN + ReLU +
    dropout). Input ``(N, in_ch, H, W)``, output ``(N, out_ch, H, W)``.
    """

    def __init__(self, in_ch: int, out_ch: int = 256, rates: Sequence[int] = (6, 12, 18), dropout: float = 0.0):
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        self.convs = nn.ModuleList([conv_bn_relu(in_ch, out_ch, 1)] + [conv_bn_relu(in_ch, out_ch, 3, r) for r in self.rates])
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Sequential(
            nn.Conv2d(out_ch * (len(self.rates) + 2), out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [conv(x) for conv in self.convs]
        pooled = self.pool(x).expand(-1, -1, x.shape[2], x.shape[3])
        if branches[0].is_contiguous(memory_format=torch.channels_last) and not branches[0].is_contiguous():
            # a broadcast input makes torch.cat return NCHW, which the projection would transpose back
            pooled = pooled.contiguous(memory_format=torch.channels_last)
        return self.project(torch.cat(branches + [pooled], dim=1))


def aspp_rates(output_stride: int) -> Tuple[int, int, int]:
    """DeepLab's ASPP rates for an encoder output stride: 6/12/18 at 16, doubled at 8, halved at 32."""
    if output_stride not in (4, 8, 16, 32):
        raise ValueError(f"ASPP needs an output stride of 4, 8, 16 or 32, got {output_stride}")
    scale = 16 // output_stride if output_stride <= 16 else 0.5
    return tuple(max(1, int(r * scale)) for r in (6, 12, 18))
