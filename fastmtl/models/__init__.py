"""Models: encoder, heads and the named model suite. ``build_model(config, outputs_desc)``."""
from __future__ import annotations

from typing import Dict, Optional

from torch import nn

from .encoder import ENCODERS, Encoder, load_pretrained
from .heads import ASPP, DecoderAllScale, DecoderDeepLabV3p, DecoderDistill, SelfAttention, SqueezeExcitation
from .zoo import MODEL_NAMES, MODELS, BranchedModel, DistillAllConnectModel, DistillModel, JointModel, MultiTaskModel

__all__ = [
    "ENCODERS", "MODEL_NAMES", "MODELS", "Encoder", "load_pretrained", "ASPP", "DecoderAllScale", "DecoderDeepLabV3p",
    "DecoderDistill", "SelfAttention", "SqueezeExcitation", "MultiTaskModel", "JointModel", "BranchedModel",
    "DistillModel", "DistillAllConnectModel", "build_model",
]


def build_model(config, outputs_desc: Dict[str, int], fused: Optional[bool] = False) -> MultiTaskModel:
    """The model named by ``config.model`` with the config's knobs.

    Args:
        config: a :class:`fastmtl.config.Config` (or anything with its model fields).
        outputs_desc: ``{task: channels}``, e.g. ``{"semseg": 19, "depth": 1}``.
        fused: swap in the fused Triton modules of :mod:`fastmtl.nn` (same state_dict).
    """
    if config.model not in MODEL_NAMES:
        raise ValueError(f"unknown model {config.model!r}; valid choices: {', '.join(MODEL_NAMES)}")
    common = dict(encoder=config.encoder, dilation=tuple(config.dilation), se=config.se, pretrained=config.pretrained,
                  aspp=config.aspp, skip=config.skip, aspp_dropout=config.aspp_dropout)
    if config.model in ("distill", "distill_allconnect"):
        common["attention_init"] = config.attention_init
    model: nn.Module = MODELS[config.model](outputs_desc, **common)
    if fused:
        from fastmtl.nn import fuse

        fuse(model)
    return model
