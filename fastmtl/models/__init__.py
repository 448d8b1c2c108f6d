"""Models: encoder, heads and the named model suite. ``build_model(config, outputs_desc)``."""
from __future__ import annotations

from typing import Dict, Mapping, Optional

from torch import nn

from ..errors import ConfigError
from ..nn import fuse
from .base import MultiTaskModel
from .cross_stitch import CrossStitchModel
from .encoder import ENCODERS, Encoder, load_pretrained
from .heads import DecoderAllScale, DecoderDeepLabV3p, DecoderDistill
from .knobs import ModelKnobs
from .mtan import MTANModel
from .zoo import MODEL_NAMES, MODELS, BranchedModel, DistillAllConnectModel, DistillModel, JointModel

__all__ = [
    "ENCODERS", "MODEL_NAMES", "MODELS", "Encoder", "load_pretrained", "DecoderAllScale", "DecoderDeepLabV3p",
    "DecoderDistill", "MultiTaskModel", "JointModel", "BranchedModel",
    "DistillModel", "DistillAllConnectModel", "MTANModel", "CrossStitchModel", "ModelKnobs", "build_model",
]


def build_model(config, outputs_desc: Dict[str, int], fused: Optional[bool] = False) -> MultiTaskModel:
    """The model named by ``config.model`` with the config's knobs.

    Args:
        config: a :class:`ModelKnobs` (e.g. a :class:`fastmtl.config.Config`), or a dict of some
            of its fields (the CLI flag names with ``-`` -> ``_``, e.g. ``{"model": "joint",
            "encoder": "resnet18", "dilation": [False, False, True]}``; the rest keep their
            defaults). An unknown field or value is a ``ConfigError`` naming it.
        outputs_desc: ``{task: channels}``, e.g. ``{"semseg": 19, "depth": 1}``.
        fused: swap in the fused Triton modules of :mod:`fastmtl.nn` (same state_dict).
    """
    if isinstance(config, Mapping):
        config = ModelKnobs.from_fields(config)
    elif not isinstance(config, ModelKnobs):
        raise ConfigError(f"build_model: config must be a fastmtl.models.ModelKnobs (e.g. a fastmtl.config.Config) "
                          f"or a dict of its fields, got {type(config).__name__}")
    if config.model not in MODEL_NAMES:
        raise ConfigError(f"--model: unknown value {config.model!r}; valid choices: {', '.join(MODEL_NAMES)}")
    common = dict(encoder=config.encoder, dilation=tuple(config.dilation), se=config.se, pretrained=config.pretrained,
                  aspp=config.aspp, skip=config.skip, aspp_dropout=config.aspp_dropout,
                  dilation_style=config.dilation_style)
    if config.model in ("distill", "distill_allconnect"):
        common["attention_init"] = config.attention_init
    model: nn.Module = MODELS[config.model](outputs_desc, **common)
    if fused:
        fuse(model)
    return model
