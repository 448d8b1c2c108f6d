"""MTAN (Liu et al. 2019, "End-to-End Multi-Task Learning with Attention") on the built-in ResNets.

A shared ResNet; per task, one attention module per stage (LibMTL's ResNet construction,
``LibMTL/architecture/MTAN.py``). Stage ``i`` of the shared network gives ``pre_i`` (its blocks
but the last) and ``f_i`` (after the last block); task ``t``'s attended feature is
``a_i = mask_i([pre_i, down(r_{i-1})]) * f_i`` (``mask_0(pre_0)`` at the first stage), with
``mask = sigmoid(BN(1x1(ReLU(BN(1x1(.))))))`` and ``r_i = block_i(a_i)`` a shared ResNet block
to stage ``i+1``'s channels (``down`` = 2x2 max-pool where the next stage halves the size).
Each task's DeepLabV3+ head (as ``branched``) reads its ``a_3`` (bottleneck, output stride)
and ``a_0`` (the 4x skip).

Where it differs from LibMTL: LibMTL builds a task's attention list as ``[module] * T``, so its
tasks share one attention module per stage; here each task has its own, as in the paper (the
parameter counts are equal at T = 1). docs/models.md has the table.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import MultiTaskModel, branch_heads
from .encoder import BasicBlock, Bottleneck, Encoder


class MTANEncoder(Encoder):
    """The shared ResNet of MTAN; same parameters (and names) as :class:`Encoder`.

    ``forward(x (N, 3, H, W))`` -> ``{1: x, "pre1".."pre4": the stage's blocks but the last,
    "layer1".."layer4": the stage's output}``, each ``(N, C_i, H/s_i, W/s_i)``.
    """

    STAGES = ("1", "2", "3", "4")

    def forward(self, x: torch.Tensor) -> Dict:
        features: Dict = {1: x}
        x = self.maxpool(self.stem(x))
        for name, layer in zip(self.STAGES, self.layers):
            pre = layer[:-1](x)
            x = layer[-1](pre)
            features["pre" + name], features["layer" + name] = pre, x
        return features


def attention_mask(in_ch: int, mid_ch: int, out_ch: int) -> nn.Sequential:
    """MTAN's attention: ``(N, in_ch, h, w)`` -> a ``(N, out_ch, h, w)`` mask in (0, 1)."""
    return nn.Sequential(nn.Conv2d(in_ch, mid_ch, 1), nn.BatchNorm2d(mid_ch), nn.ReLU(inplace=True),
                         nn.Conv2d(mid_ch, out_ch, 1), nn.BatchNorm2d(out_ch), nn.Sigmoid())


class MTANModel(MultiTaskModel):
    """MTAN: shared ResNet, per-task attention at every stage, per-task ASPP + DeepLabV3+ decoder."""

    def __init__(self, outputs_desc, encoder="resnet34", dilation=(False, False, True), se=False, pretrained=None,
                 aspp=True, skip=True, aspp_dropout=0.0, dilation_style="template"):
        super().__init__(outputs_desc, encoder, dilation, se, pretrained, dilation_style)
        enc = self.encoder
        expansion = enc.layer1[-1].expansion
        block = Bottleneck if expansion == 4 else BasicBlock
        ch = [planes * expansion for planes in (64, 128, 256, 512)]  # each stage's output channels
        self.attention = nn.ModuleDict({t: nn.ModuleList(
            [attention_mask(ch[0] if i == 0 else 2 * ch[i], ch[i] // expansion, ch[i]) for i in range(4)])
            for t in self.outputs_desc})
        self.block_attention = nn.ModuleList([
            block(ch[i], ch[i + 1] // expansion,
                  downsample=nn.Sequential(nn.Conv2d(ch[i], ch[i + 1], 1, bias=False), nn.BatchNorm2d(ch[i + 1])))
            for i in range(3)])
        self.aspp, self.decoder = branch_heads(self.outputs_desc, ch[3], ch[0], enc.output_stride, aspp, skip,
                                               aspp_dropout)

    def make_encoder(self, name: str, dilation: Sequence[bool], se: bool, pretrained: Optional[str],
                     dilation_style: str) -> nn.Module:
        return MTANEncoder(name, dilation, se=se, pretrained=pretrained, dilation_style=dilation_style)

    def attend(self, task: str, features: Dict) -> List[torch.Tensor]:
        """Task ``task``'s attended stage features ``[a_0, a_1, a_2, a_3]`` (see the module docstring)."""
        attended: List[torch.Tensor] = []
        carried = None
        for i, (name, mask) in enumerate(zip(MTANEncoder.STAGES, self.attention[task])):
            pre, out = features["pre" + name], features["layer" + name]
            if carried is None:
                gate = mask(pre)
            else:
                if carried.shape[-2:] != pre.shape[-2:]:
                    carried = F.max_pool2d(carried, 2, 2)
                gate = mask(torch.cat([pre, carried], dim=1))
            attended.append(gate * out)
            if i < 3:
                carried = self.block_attention[i](attended[-1])
        return attended

    def decode(self, features):
        out = {}
        for t in self.outputs_desc:
            a = self.attend(t, features)
            out[t], _ = self.decoder[t](self.aspp[t](a[3]), a[0])
        return out
