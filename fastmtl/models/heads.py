"""Reference (plain PyTorch) building blocks of the DeepLabV3+ family.

These are the unfused modules. Their fused twins in :mod:`fastmtl.nn` have the same
constructor arguments, parameters and ``state_dict`` keys, so checkpoints move freely
between fused and unfused models.

All tensors are ``(N, C, H, W)``; any memory format is accepted.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

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


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` to ``(N, C, *size)`` (align_corners=False)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
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
        return self.project(torch.cat(branches + [pooled], dim=1))


def aspp_rates(output_stride: int) -> Tuple[int, int, int]:
    """DeepLab's ASPP rates for an encoder output stride: 6/12/18 at 16, doubled at 8, halved at 32."""
    if output_stride not in (4, 8, 16, 32):
        raise ValueError(f"ASPP needs an output stride of 4, 8, 16 or 32, got {output_stride}")
    scale = 16 // output_stride if output_stride <= 16 else 0.5
    return tuple(max(1, int(r * scale)) for r in (6, 12, 18))


class DecoderDeepLabV3p(nn.Module):
    """DeepLabV3+ decoder with the 4x skip (or none).

    ``forward(bottleneck (N, Cb, h, w), skip_4x (N, Cs, H/4, W/4))`` returns
    ``(predictions_4x (N, num_out, H/4, W/4), features_4x (N, F, H/4, W/4))`` where
    ``F = 256`` with the skip and ``Cb`` without it.
    """

    def __init__(self, bottleneck_ch: int, skip_4x_ch: int, num_out_ch: int, skip: bool = True):
        super().__init__()
        self.skip = skip
        if skip:
            self.skip_layer = conv_bn_relu(skip_4x_ch, 48, 1)
            self.last_conv = conv_bn_relu(bottleneck_ch + 48, 256, 3)
        self.out_channels = 256 if skip else bottleneck_ch
        self.features_to_predictions = nn.Conv2d(self.out_channels, num_out_ch, 1)

    def forward(self, bottleneck: torch.Tensor, skip_4x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        features = upsample_to(bottleneck, skip_4x.shape[-2:])
        if self.skip:
            features = self.last_conv(torch.cat([self.skip_layer(skip_4x), features], dim=1))
        return self.features_to_predictions(features), features


class DecoderAllScale(nn.Module):
    """All-scale skip decoder (report Figs. 16, 19, 20): merges at 8x, 4x and 2x.

    At each scale ``s`` the running features are upsampled to the encoder feature at ``s``,
    concatenated with its 48-channel 1x1 projection (``skip_layer_{s}x``) and fused by a
    3x3 conv to 256 (``comb_layer_{s}x``). ``forward(bottleneck, encoder_features)`` takes
    the encoder's ``{scale: feature}`` dict and returns ``(predictions_2x, features_2x)``.
    """

    SCALES = (8, 4, 2)

    def __init__(self, bottleneck_ch: int, skip_channels: Dict[int, int], num_out_ch: int):
        super().__init__()
        missing = [s for s in self.SCALES if s not in skip_channels]
        if missing:
            raise ValueError(
                f"the all-scale decoder needs encoder features at scales {self.SCALES}; "
                f"scales {missing} are missing (available: {sorted(skip_channels)}); "
                "use a dilation setting with output stride >= 8"
            )
        in_ch = bottleneck_ch
        for s in self.SCALES:
            setattr(self, f"skip_layer_{s}x", conv_bn_relu(skip_channels[s], 48, 1))
            setattr(self, f"comb_layer_{s}x", conv_bn_relu(in_ch + 48, 256, 3))
            in_ch = 256
        self.out_channels = 256
        self.features_to_predictions = nn.Conv2d(256, num_out_ch, 1)

    def forward(self, bottleneck: torch.Tensor, encoder_features: Dict[int, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        x = bottleneck
        for s in self.SCALES:
            skip = encoder_features[s]
            skip_layer = getattr(self, f"skip_layer_{s}x")
            comb_layer = getattr(self, f"comb_layer_{s}x")
            x = comb_layer(torch.cat([skip_layer(skip), upsample_to(x, skip.shape[-2:])], dim=1))
        return self.features_to_predictions(x), x


class DecoderDistill(nn.Module):
    """Second-stage decoder of task distillation: a 1x1 prediction conv.

    Its input is the task's own features plus the other tasks' attended features, a sum the
    model builds with ``SelfAttention(x_other, residual=own)`` so that the fused gate kernel
    computes it in one pass. ``(N, C, h, w) -> (N, num_out, h, w)``.
    """

    def __init__(self, features_ch: int, num_out_ch: int):
        super().__init__()
        self.features_to_predictions = nn.Conv2d(features_ch, num_out_ch, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.features_to_predictions(features)
