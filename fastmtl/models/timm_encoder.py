"""Any timm model with ``features_only`` as a fastmtl encoder (``--encoder tu-<timm name>``).

timm is an optional extra (``pip install "fastmtl[timm]"``), imported only when a ``tu-``
encoder is built, so a missing timm, or a torchvision that does not match torch (which breaks
``import timm``), never breaks ``import fastmtl``. Weights come only from a local file.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from .encoder import pretrained_path

TIMM_PREFIX = "tu-"
TIMM_DILATIONS = {(False, False, False): 32, (False, False, True): 16, (False, True, True): 8}


def is_timm_encoder(name: str) -> bool:
    """True for ``tu-<timm name>`` (a timm encoder), False for the built-in ResNet names."""
    return name.startswith(TIMM_PREFIX)


def timm_output_stride(dilation: Sequence[bool]) -> int:
    """The output stride (32 / 16 / 8) a ``--dilation`` tuple asks a timm encoder for; ValueError
    naming ``--dilation`` for a tuple that is no output stride (timm dilates whole stages from the end)."""
    key = tuple(bool(f) for f in dilation)
    if key not in TIMM_DILATIONS:
        raise ValueError(f"--dilation {','.join(str(f).lower() for f in key)}: a timm encoder (--encoder tu-...) takes "
                         f"an output stride, not per-layer dilation: use false,false,false (32), false,false,true (16) "
                         f"or false,true,true (8)")
    return TIMM_DILATIONS[key]


def check_timm_options(se: bool, dilation: Sequence[bool], dilation_style: str) -> int:
    """The output stride of a timm encoder built with these ResNet knobs; ValueError naming the flag
    that cannot apply to one (``--se``, ``--dilation-style``, a ``--dilation`` that is no output stride)."""
    if se:
        raise ValueError("--se adds squeeze-excitation to the built-in ResNet blocks only: a timm encoder "
                         "(--encoder tu-...) keeps its own blocks (--fused fuses its SE); pass --no-se")
    if dilation_style != "template":
        raise ValueError(f"--dilation-style {dilation_style}: applies to the built-in ResNets only, not to a "
                         f"timm encoder (--encoder tu-...)")
    return timm_output_stride(dilation)


def import_timm() -> ModuleType:
    """The ``timm`` module; a one-line ImportError saying how to get it when it is missing or
    cannot be imported (a torchvision built for another torch fails on import)."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ImportError('--encoder tu-...: needs the timm package: pip install "fastmtl[timm]"') from None
    except RuntimeError as e:  # torchvision's C extension does not match torch: "operator torchvision::nms ..."
        raise ImportError(f"--encoder tu-...: timm could not be imported ({e}); install the torchvision "
                          f"built for your torch {torch.__version__}") from None


def check_pretrained_file(timm: ModuleType, timm_name: str, overlay: Dict[str, str], path: str) -> None:
    """ValueError naming ``--pretrained`` unless the file is a state_dict of the full timm model
    ``timm_name`` (a strict load, classifier included: timm's features_only load is not strict, so
    it would keep random weights for keys the file lacks)."""
    try:
        timm.create_model(timm_name, pretrained=True, pretrained_cfg_overlay=overlay)
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:300]
        raise ValueError(f"--pretrained {path} does not match --encoder {TIMM_PREFIX}{timm_name}: {reason}") from None


class TimmEncoder(nn.Module):
    """``timm.create_model(name, features_only=True, output_stride=...)`` as a feature pyramid.

    Args:
        name: ``tu-<timm model name>``, e.g. ``tu-convnext_atto``.
        output_stride: 32, 16 or 8; 16 and 8 use timm's ``output_stride`` (dilated last stages),
            a model that cannot do it is a one-line ValueError.
        pretrained_file: a path (or ``file://`` URL) of a local timm checkpoint (``.pth``/``.bin``) or ``.safetensors`` file of the
            full timm model (classifier included, checked by :func:`check_pretrained_file`), loaded
            by timm's own pretrained loader (``pretrained_cfg_overlay`` ``file=``; the classifier is
            dropped); nothing is downloaded.

    ``forward(x (N, 3, H, W))`` -> ``{1: x, scale: (N, C_scale, H/scale, W/scale)}`` for timm's
    ``feature_info`` reductions (a later stage at the same scale replaces an earlier one, as the
    built-in ResNets do); ``feature_channels`` is ``{scale: C_scale}``.
    """

    def __init__(self, name: str, output_stride: int = 32, pretrained_file: Optional[str] = None):
        super().__init__()
        if not is_timm_encoder(name) or len(name) == len(TIMM_PREFIX):
            raise ValueError(f"--encoder {name}: a timm encoder is named {TIMM_PREFIX}<timm model name>")
        timm = import_timm()
        timm_name = name[len(TIMM_PREFIX):]
        if not timm.is_model(timm_name):
            raise ValueError(f"--encoder {name}: timm {timm.__version__} has no model {timm_name!r}")
        kwargs = {"features_only": True}
        if output_stride != 32:
            kwargs["output_stride"] = output_stride
        if pretrained_file:
            pretrained_file = pretrained_path(pretrained_file)
            if not os.path.isfile(pretrained_file):
                raise FileNotFoundError(f"--pretrained: no such file: {pretrained_file}")
            overlay = {"file": os.path.abspath(pretrained_file)}
            check_pretrained_file(timm, timm_name, overlay, pretrained_file)
            kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
        try:
            self.model = timm.create_model(timm_name, **kwargs)
        except (TypeError, AssertionError, NotImplementedError) as e:  # the model takes no output_stride / features_only
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if output_stride != 32:
                raise ValueError(f"--dilation: timm model {timm_name} cannot run at output stride {output_stride} "
                                 f"({reason}); use --dilation false,false,false (stride 32)") from None
            raise ValueError(f"--encoder {name}: timm cannot build it with features_only=True ({reason})") from None
        self.name = name
        self.scales = [int(r) for r in self.model.feature_info.reduction()]
        self.feature_channels: Dict[int, int] = {1: 3}
        for scale, ch in zip(self.scales, self.model.feature_info.channels()):
            self.feature_channels[scale] = int(ch)
        self.output_stride = self.scales[-1]
        if self.output_stride != output_stride:
            raise ValueError(f"--dilation: timm model {timm_name} gives output stride {self.output_stride}, "
                             f"not {output_stride} (it does not support timm's output_stride={output_stride})")
        if 4 not in self.feature_channels:
            raise ValueError(f"--encoder {name}: the decoders need features at 4x; timm's {timm_name} has scales "
                             f"{self.scales}")

    def forward(self, x: torch.Tensor) -> Dict[int, torch.Tensor]:
        """``x (N, 3, H, W)`` -> ``{scale: (N, C_scale, H/scale, W/scale)}`` (with ``1: x``)."""
        features = {1: x}
        for scale, feature in zip(self.scales, self.model(x)):
            features[scale] = feature
        return features
