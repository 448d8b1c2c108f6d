"""The model suite by name (``MODELS``): ``joint``, ``branched``, ``distill``, ``distill_allconnect``,
``mtan`` (models/mtan.py) and ``cross_stitch`` (models/cross_stitch.py).

Every model takes an image batch ``(N, 3, H, W)`` (H and W multiples of the encoder's output
stride) and returns ``{task: prediction}`` at input resolution, ``(N, outputs_desc[task],
H, W)``. Distillation models return ``[initial, final]`` per task (deep supervision; the
last element is the prediction). ``outputs_desc`` describes the tasks, e.g.
``{"semseg": 19, "depth": 1}``; any number of tasks works.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from ..layers import SelfAttention
from .base import MultiTaskModel, bottleneck_head
from .cross_stitch import CrossStitchModel
from .heads import DecoderAllScale, DecoderDeepLabV3p, DecoderDistill
from .mtan import MTANModel


class JointModel(MultiTaskModel):
    """The report's deeplabv3p: one shared ASPP + decoder, one head of ``sum(outputs)`` channels split per task."""

    def __init__(self, outputs_desc, encoder="resnet34", dilation=(False, False, True), se=False, pretrained=None,
                 aspp=True, skip=True, aspp_dropout=0.0, dilation_style="template"):
        super().__init__(outputs_desc, encoder, dilation, se, pretrained, dilation_style)
        ch = self.encoder.feature_channels
        self.aspp = bottleneck_head(ch[self.encoder.output_stride], self.encoder.output_stride, aspp, aspp_dropout)
        self.decoder = DecoderDeepLabV3p(256, ch[4], sum(self.outputs_desc.values()), skip)

    def decode(self, features):
        predictions, _ = self.decoder(self.aspp(features[self.encoder.output_stride]), features[4])
        return dict(zip(self.outputs_desc, predictions.split(list(self.outputs_desc.values()), dim=1)))


class BranchedModel(MultiTaskModel):
    """Per-task ASPP + DeepLabV3+ decoder on the shared encoder."""

    def __init__(self, outputs_desc, encoder="resnet34", dilation=(False, False, True), se=False, pretrained=None,
                 aspp=True, skip=True, aspp_dropout=0.0, dilation_style="template"):
        super().__init__(outputs_desc, encoder, dilation, se, pretrained, dilation_style)
        ch, os_ = self.encoder.feature_channels, self.encoder.output_stride
        self.aspp = nn.ModuleDict({t: bottleneck_head(ch[os_], os_, aspp, aspp_dropout) for t in self.outputs_desc})
        self.decoder = nn.ModuleDict({t: self.make_decoder(ch, n, skip) for t, n in self.outputs_desc.items()})

    def make_decoder(self, channels: Dict[int, int], num_out: int, skip: bool) -> nn.Module:
        """A task's decoder, given the encoder's ``{scale: channels}``."""
        return DecoderDeepLabV3p(256, channels[4], num_out, skip)

    def run_decoder(self, task: str, bottleneck: torch.Tensor, features: Dict[int, torch.Tensor]):
        """``(predictions, decoder features)`` of one task's decoder."""
        return self.decoder[task](bottleneck, features[4])

    def task_features(self, features):
        """``{task: (initial predictions, decoder features)}``."""
        bottleneck = features[self.encoder.output_stride]
        return {t: self.run_decoder(t, self.aspp[t](bottleneck), features) for t in self.outputs_desc}

    def decode(self, features):
        return {t: pred for t, (pred, _) in self.task_features(features).items()}


class DistillModel(BranchedModel):
    """Branched + task distillation with spatial attention (report Fig. 11).

    Each task's decoder features go through its ``SelfAttention``; task ``t``'s final
    prediction is ``decoder2[t](features_t + sum_{s != t} attention[s](features_s))`` (with
    more than two tasks each attention runs once per receiving task, so its sum with the
    receiver's features stays one fused kernel).
    """

    def __init__(self, outputs_desc, encoder="resnet34", dilation=(False, False, True), se=False, pretrained=None,
                 aspp=True, skip=True, aspp_dropout=0.0, attention_init="zero", dilation_style="template"):
        super().__init__(outputs_desc, encoder, dilation, se, pretrained, aspp, skip, aspp_dropout, dilation_style)
        feat_ch = next(iter(self.decoder.values())).out_channels
        self.attention = nn.ModuleDict({t: SelfAttention(feat_ch, feat_ch, attention_init) for t in self.outputs_desc})
        self.decoder2 = nn.ModuleDict({t: DecoderDistill(feat_ch, n) for t, n in self.outputs_desc.items()})

    def decode(self, features):
        per_task = self.task_features(features)
        out = {}
        for t, (initial, own) in per_task.items():
            fused = own
            for s, (_, other) in per_task.items():
                if s != t:
                    fused = self.attention[s](other, residual=fused)
            out[t] = [initial, self.decoder2[t](fused)]
        return out


class DistillAllConnectModel(DistillModel):
    """Task distillation with the all-scale (8x, 4x, 2x) skip decoder (report Fig. 16); works at 2x."""

    def make_decoder(self, channels, num_out, skip):
        return DecoderAllScale(256, channels, num_out)

    def run_decoder(self, task, bottleneck, features):
        return self.decoder[task](bottleneck, features)


MODELS = {"joint": JointModel, "branched": BranchedModel, "distill": DistillModel,
          "distill_allconnect": DistillAllConnectModel, "mtan": MTANModel, "cross_stitch": CrossStitchModel}
MODEL_NAMES = tuple(MODELS)
