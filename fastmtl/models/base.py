"""The multi-task model's contract: an encoder, ``decode`` of its features, predictions at input size.

``MultiTaskModel`` takes an image batch ``(N, 3, H, W)`` (H and W multiples of the encoder's
output stride) and returns ``{task: prediction}`` at input resolution, ``(N, outputs_desc[task],
H, W)`` (a ``[initial, final]`` list for deep supervision).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..layers import ASPP, aspp_rates, conv_bn_relu, upsample_to
from .encoder import Encoder
from .heads import DecoderDeepLabV3p
from .timm_encoder import TimmEncoder, check_timm_options, is_timm_encoder

Prediction = Union[torch.Tensor, List[torch.Tensor]]


def bottleneck_head(in_ch: int, output_stride: int, aspp: bool, dropout: float = 0.0) -> nn.Module:
    """ASPP with rates scaled to the output stride, or a plain 1x1 conv-BN-ReLU to 256 channels."""
    if aspp:
        return ASPP(in_ch, 256, aspp_rates(output_stride), dropout)
    return conv_bn_relu(in_ch, 256, 1)


def branch_heads(outputs_desc: Dict[str, int], bottleneck_ch: int, skip_4x_ch: int, output_stride: int, aspp: bool,
                 skip: bool, dropout: float = 0.0) -> Tuple[nn.ModuleDict, nn.ModuleDict]:
    """``(aspp, decoder)``: per task a bottleneck head (:func:`bottleneck_head`) on ``bottleneck_ch``
    channels at ``output_stride`` and a DeepLabV3+ decoder with a ``skip_4x_ch``-channel 4x skip."""
    heads = nn.ModuleDict({t: bottleneck_head(bottleneck_ch, output_stride, aspp, dropout) for t in outputs_desc})
    decoders = nn.ModuleDict({t: DecoderDeepLabV3p(256, skip_4x_ch, n, skip) for t, n in outputs_desc.items()})
    return heads, decoders


class MultiTaskModel(nn.Module):
    """Shared encoder + per-model heads. Subclasses implement ``decode``."""

    def __init__(self, outputs_desc: Dict[str, int], encoder: str = "resnet34",
                 dilation: Sequence[bool] = (False, False, True), se: bool = False, pretrained: Optional[str] = None,
                 dilation_style: str = "template"):
        super().__init__()
        if not outputs_desc:
            raise ValueError("outputs_desc must name at least one task")
        self.outputs_desc = dict(outputs_desc)
        self.encoder = self.make_encoder(encoder, dilation, se, pretrained, dilation_style)

    def make_encoder(self, name: str, dilation: Sequence[bool], se: bool, pretrained: Optional[str],
                     dilation_style: str) -> nn.Module:
        """The model's ``encoder``: everything whose parameters the tasks share (gradient balancing's
        shared parameters); its ``forward(x)`` gives what ``decode`` reads. Default: one ResNet, or
        a :class:`TimmEncoder` for ``tu-<timm name>`` (``dilation`` then names its output stride;
        ``se`` and ``dilation_style`` are ResNet-only and refused)."""
        if is_timm_encoder(name):
            return TimmEncoder(name, check_timm_options(se, dilation, dilation_style), pretrained)
        return Encoder(name, dilation, se=se, pretrained=pretrained, dilation_style=dilation_style)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (the encoder's output stride)."""
        return self.encoder.output_stride

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"input size {h}x{w} is not supported: height and width must be multiples of {m} "
                             f"(the encoder's output stride); crop or pad the input")

    def forward(self, x: torch.Tensor) -> Dict[str, Prediction]:
        self.check_input(x)
        return self.predict_from_features(self.encoder(x), x.shape[-2:])

    def predict_from_features(self, features: Dict[int, torch.Tensor], size) -> Dict[str, Prediction]:
        """Everything after the shared encoder: its ``{scale: feature}`` -> ``{task: prediction}`` at
        ``size`` (H, W). Gradient balancing w.r.t. the shared representation backpropagates the
        task losses to ``features`` through this alone."""
        out = self.decode(features)
        return {t: [upsample_to(p, size) for p in v] if isinstance(v, list) else upsample_to(v, size)
                for t, v in out.items()}

    def decode(self, features: Dict[int, torch.Tensor]) -> Dict[str, Prediction]:
        raise NotImplementedError
