"""Cross-stitch networks (Misra et al. 2016) on the built-in ResNets.

One ResNet per task; after each of the first three stages a cross-stitch unit mixes the tasks'
features: task ``t``'s next stage reads ``sum_s alpha_i[t, s] * f_i^s`` (LibMTL's ResNet
construction, ``LibMTL/architecture/Cross_stitch.py``). Each task's DeepLabV3+ head (as
``branched``) reads its own network's last stage (bottleneck) and layer1 (the 4x skip).

Where it differs from LibMTL: alpha starts at the paper's ``alpha_S = 0.9`` on the diagonal and
``alpha_D = 0.1 / (T - 1)`` off it (LibMTL: all ones); it holds 3 units, ``(3, T, T)``, the ones
used (LibMTL allocates 4 and uses 3). docs/models.md has the table.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from .base import MultiTaskModel, branch_heads
from .encoder import Encoder

SELF_WEIGHT = 0.9  # the paper's alpha_S; the rest, 1 - alpha_S, is shared among the other tasks


def stitch_init(tasks: int) -> torch.Tensor:
    """``(3, T, T)`` initial cross-stitch weights: ``SELF_WEIGHT`` on the diagonal, rows summing to 1."""
    if tasks == 1:
        return torch.ones(3, 1, 1)
    alpha = torch.full((tasks, tasks), (1.0 - SELF_WEIGHT) / (tasks - 1))
    alpha.fill_diagonal_(SELF_WEIGHT)
    return alpha.expand(3, tasks, tasks).clone()


class CrossStitchEncoder(nn.Module):
    """One :class:`Encoder` per task (``networks[task]``) and the cross-stitch weights ``stitch (3, T, T)``.

    ``forward(x (N, 3, H, W))`` -> ``{1: x, "<task>:4x": its layer1 (N, C_4, H/4, W/4), "<task>:out":
    its last stage (N, C_out, H/os, W/os)}``. ``output_stride``, ``feature_channels`` and
    ``layer_scales`` are those of each network.
    """

    def __init__(self, tasks: Sequence[str], name: str, dilation: Sequence[bool], se: bool,
                 pretrained: Optional[str], dilation_style: str):
        super().__init__()
        self.tasks = list(tasks)
        self.networks = nn.ModuleDict({t: Encoder(name, dilation, se=se, pretrained=pretrained,
                                                  dilation_style=dilation_style) for t in self.tasks})
        self.stitch = nn.Parameter(stitch_init(len(self.tasks)))
        first = self.networks[self.tasks[0]]
        self.output_stride, self.feature_channels = first.output_stride, first.feature_channels
        self.layer_scales = first.layer_scales

    def forward(self, x: torch.Tensor) -> Dict:
        nets = [self.networks[t] for t in self.tasks]
        feats = [net.maxpool(net.stem(x)) for net in nets]
        out: Dict = {1: x}
        for i in range(4):
            if i > 0:
                stacked = torch.stack(feats)  # (T, N, C, h, w)
                feats = list(torch.einsum("ts,snchw->tnchw", self.stitch[i - 1].to(stacked.dtype), stacked))
            feats = [net.layers[i](f) for net, f in zip(nets, feats)]
            if i == 0:
                out.update({f"{t}:4x": f for t, f in zip(self.tasks, feats)})
        out.update({f"{t}:out": f for t, f in zip(self.tasks, feats)})
        return out


class CrossStitchModel(MultiTaskModel):
    """Cross-stitch: one ResNet per task with cross-stitch units, per-task ASPP + DeepLabV3+ decoder."""

    def __init__(self, outputs_desc, encoder="resnet34", dilation=(False, False, True), se=False, pretrained=None,
                 aspp=True, skip=True, aspp_dropout=0.0, dilation_style="template"):
        super().__init__(outputs_desc, encoder, dilation, se, pretrained, dilation_style)
        ch, os_ = self.encoder.feature_channels, self.encoder.output_stride
        self.aspp, self.decoder = branch_heads(self.outputs_desc, ch[os_], ch[4], os_, aspp, skip, aspp_dropout)

    def make_encoder(self, name: str, dilation: Sequence[bool], se: bool, pretrained: Optional[str],
                     dilation_style: str) -> nn.Module:
        return CrossStitchEncoder(list(self.outputs_desc), name, dilation, se, pretrained, dilation_style)

    def decode(self, features):
        out = {}
        for t in self.outputs_desc:
            out[t], _ = self.decoder[t](self.aspp[t](features[f"{t}:out"]), features[f"{t}:4x"])
        return out
