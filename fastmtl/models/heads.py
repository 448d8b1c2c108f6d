"""Decoders and prediction heads of the DeepLabV3+ family: the DeepLabV3+ decoder (4x skip or
none), the all-scale skip decoder and the distillation's second-stage decoder.

All tensors are ``(N, C, H, W)``; any memory format is accepted.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from ..layers import conv_bn_relu, upsample_to


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
