"""ResNet encoders (18/34/50/101) with dilation and optional squeeze-excitation.

Parameter names match torchvision's ``ResNet`` (``conv1``, ``bn1``, ``layer1.0.conv1`` ...,
``downsample.0``), so torchvision checkpoint files load; the classifier (``fc.*``) is not
part of the encoder and is ignored on load. SE adds ``layerK.I.se.fc1/fc2`` parameters,
which a plain torchvision checkpoint does not have: they stay freshly initialised.

``Encoder.forward(x)`` returns ``{downscale factor: feature}``: 1 = the input, 2 = the stem
(after conv1/bn1/relu), 4 = layer1, 8 = layer2, ...; with dilation a later layer at the same
scale replaces an earlier one (the course template's behaviour).

Dilation (``replace_stride_with_dilation``) follows one of two rules, ``dilation_style``:

- ``"template"`` (default; the network behind the report's numbers): a BasicBlock's ``conv1``
  is never dilated, only ``conv2`` (a Bottleneck's one 3x3, ``conv2``, takes it as usual);
  torchvision's ``_make_layer`` bookkeeping gives the first block of a dilated layer the
  previous dilation and later blocks the new one; then the first block of every dilated layer
  gets ``conv2.dilation = padding = 2`` (the course template's ``Encoder._create`` patch).
- ``"torchvision"``: both 3x3 convs of a BasicBlock take the block's dilation, and the first
  block of a dilated layer keeps the previous dilation, unpatched (torchvision's Bottleneck
  rule, extended to BasicBlock).

Both rules give the same shapes, parameters and MACs; only the receptive fields differ.
"""
from __future__ import annotations

import os
import urllib.parse
import urllib.request
from typing import Dict, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_error_reason
from ..layers import SqueezeExcitation, bn_relu

ENCODERS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
DILATION_STYLES = ("template", "torchvision")
TEMPLATE_FIRST_BLOCK_DILATION = 2  # the template's patch of layerN[0].conv2 in every dilated layer


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _tail(se: Optional[nn.Module], out: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """``relu(se(out) + identity)``; a fused SE module does all of it in one kernel."""
    if se is None:
        return F.relu(out + identity)
    if getattr(se, "fuses_residual", False):
        return se(out, identity=identity)
    return F.relu(se(out) + identity)


class BasicBlock(nn.Module):
    """ResNet basic block that allows dilation (torchvision's refuses it); SE after bn2.

    ``dilation`` applies to ``conv2``, and to ``conv1`` too when ``dilate_conv1`` (torchvision
    style); the template's block never dilates ``conv1``.
    """

    expansion = 1
    relu_after = ("bn1",)  # the BatchNorms whose output only a ReLU reads (fastmtl.nn.fuse fuses them)

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 dilation: int = 1, se: bool = False, dilate_conv1: bool = False):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation if dilate_conv1 else 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcitation(planes) if se else None
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = bn_relu(self.bn1, self.conv1(x), self.relu)
        out = self.bn2(self.conv2(out))
        return _tail(self.se, out, identity)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride and dilation on the 3x3); SE after bn3."""

    expansion = 4
    relu_after = ("bn1", "bn2")

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 dilation: int = 1, se: bool = False, dilate_conv1: bool = False):
        super().__init__()  # dilate_conv1: unused, conv1 is 1x1 (same signature as BasicBlock)
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcitation(planes * self.expansion) if se else None
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = bn_relu(self.bn1, self.conv1(x), self.relu)
        out = bn_relu(self.bn2, self.conv2(out), self.relu)
        out = self.bn3(self.conv3(out))
        return _tail(self.se, out, identity)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


class Encoder(nn.Module):
    """ResNet feature pyramid.

    Args:
        name: one of ``ENCODERS`` (resnet18/34/50/101).
        replace_stride_with_dilation: three flags for layer2..layer4; output stride
            32 / 16 / 8 for (F,F,F) / (F,F,T) / (F,T,T).
        se: squeeze-excitation (reduction 16) inside every block.
        dilation_style: ``"template"`` (default) or ``"torchvision"``: which 3x3 convs a dilated
            layer dilates (see the module docstring).
        pretrained: path or URL of a torchvision-format state_dict (loaded with
            ``weights_only=True``), or None for random init (with zero-init residuals).
    """

    relu_after = ("bn1",)  # the stem's

    def __init__(self, name: str = "resnet34", replace_stride_with_dilation: Sequence[bool] = (False, False, False),
                 se: bool = False, pretrained: Optional[str] = None, zero_init_residual: bool = True,
                 dilation_style: str = "template"):
        super().__init__()
        if name not in ENCODERS:
            raise ValueError(f"unknown encoder {name!r}; valid choices: {', '.join(ENCODERS)}")
        if dilation_style not in DILATION_STYLES:
            raise ValueError(f"unknown dilation style {dilation_style!r}; valid choices: {', '.join(DILATION_STYLES)}")
        if len(replace_stride_with_dilation) != 3:
            raise ValueError(f"replace_stride_with_dilation needs 3 flags (layer2..layer4), got {replace_stride_with_dilation!r}")
        kind, layers = ENCODERS[name]
        block: Type[Union[BasicBlock, Bottleneck]] = BasicBlock if kind == "basic" else Bottleneck
        self.name = name
        self.se = se
        self.dilation_style = dilation_style
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, replace_stride_with_dilation[2])
        self._init_weights(zero_init_residual)

        # downscale factor of layer1..layer4, and {scale: channels} of what forward returns
        self.layer_scales = [4]
        for dilate in replace_stride_with_dilation:
            self.layer_scales.append(self.layer_scales[-1] * (1 if dilate else 2))
        self.feature_channels: Dict[int, int] = {1: 3, 2: 64}
        for scale, planes in zip(self.layer_scales, (64, 128, 256, 512)):
            self.feature_channels[scale] = planes * block.expansion
        self.output_stride = self.layer_scales[-1]
        if pretrained:
            load_pretrained(self, pretrained)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        # as torchvision: the first block of a dilated layer keeps the previous dilation ...
        first_dilation = previous_dilation
        template = self.dilation_style == "template"
        if template and dilate:  # ... which the template then patches to 2
            first_dilation = TEMPLATE_FIRST_BLOCK_DILATION
        layers = [block(self.inplanes, planes, stride, downsample, first_dilation, self.se, dilate_conv1=not template)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation, se=self.se, dilate_conv1=not template)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, SqueezeExcitation):
                m.fc1.reset_parameters()
                m.fc2.reset_parameters()
            if zero_init_residual and isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn().weight)

    @property
    def layers(self) -> Tuple[nn.Sequential, nn.Sequential, nn.Sequential, nn.Sequential]:
        """``(layer1, layer2, layer3, layer4)``, at scales ``layer_scales``."""
        return self.layer1, self.layer2, self.layer3, self.layer4

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1/bn1/relu: ``(N, 3, H, W)`` -> ``(N, 64, H/2, W/2)`` (scale 2, before the max-pool)."""
        return bn_relu(self.bn1, self.conv1(x), self.relu)

    def forward(self, x: torch.Tensor) -> Dict[int, torch.Tensor]:
        """``x (N, 3, H, W)`` -> ``{scale: (N, C_scale, H/scale, W/scale)}``."""
        features = {1: x}
        x = self.stem(x)
        features[2] = x
        x = self.maxpool(x)
        for scale, layer in zip(self.layer_scales, self.layers):
            x = layer(x)
            features[scale] = x
        return features


def pretrained_path(path_or_url: str) -> str:
    """The local file of ``--pretrained``: a path, or a ``file://`` URL read in place.

    Other URLs are refused: fastmtl downloads nothing (fetch the file, pass its path).
    """
    if "://" not in path_or_url:
        return path_or_url
    parsed = urllib.parse.urlparse(path_or_url)
    if parsed.scheme != "file":
        raise ValueError(f"--pretrained {path_or_url}: fastmtl does not download weights; download the file "
                         f"yourself and pass its local path (or a file:// URL)")
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"--pretrained {path_or_url}: a file:// URL must name a local file (file:///path)")
    return urllib.request.url2pathname(parsed.path)


def _first(items, n: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def load_pretrained(encoder: Encoder, path_or_url: str) -> None:
    """Load a torchvision-format ResNet state_dict into ``encoder`` (weights_only=True).

    ``path_or_url`` is a local path or a ``file://`` URL (read in place, never copied into the
    torch hub cache); other URLs are refused. ``fc.*`` (the classifier) is ignored; missing
    ``se.*`` parameters are allowed (SE is not in torchvision's ResNet). A file that is not a
    checkpoint, or any other missing, unexpected or differently shaped key, raises a one-line
    ValueError naming the file and the first offending keys (with shapes).
    """
    path = pretrained_path(path_or_url)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--pretrained: no such file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or a pickle that would run code
        raise ValueError(f"--pretrained {path}: not a loadable PyTorch state_dict ({load_error_reason(e)})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--pretrained {path}: expected a state_dict of tensors, got {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    missing = [k for k in own if k not in state and ".se." not in k]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(v.shape)} in the file vs {tuple(own[k].shape)} in the model"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or shapes:
        problems = []
        if shapes:
            problems.append(f"shape mismatch: {_first(shapes)}")
        if missing:
            problems.append(f"missing keys {_first(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_first(unexpected)}")
        raise ValueError(f"--pretrained {path} does not match encoder {encoder.name}: " + "; ".join(problems))
    encoder.load_state_dict(state, strict=False)
