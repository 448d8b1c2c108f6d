"""The model knobs a run varies (:class:`ModelKnobs`) and their validation; ``fastmtl.config.Config``
extends them with the rest of a run's configuration."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from ..errors import ConfigError
from ..fields import check_value, field_types
from ..layers import ATTENTION_INITS
from .encoder import DILATION_STYLES, ENCODERS
from .timm_encoder import TIMM_PREFIX, check_timm_options, is_timm_encoder
from .zoo import MODEL_NAMES


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class ModelKnobs:
    """Which model and how it is built; field names are the CLI flags with ``-`` -> ``_``."""

    model: str = "distill_allconnect"
    encoder: str = "resnet34"  # a built-in ResNet (ENCODERS) or tu-<timm model name>
    dilation: Tuple[bool, bool, bool] = (False, True, True)  # layer2, layer3, layer4
    dilation_style: str = "template"  # which 3x3 convs a dilated layer dilates (models/encoder.py)
    aspp: bool = True
    skip: bool = True
    se: bool = True
    attention_init: str = "default"
    pretrained: Optional[str] = None
    aspp_dropout: float = 0.0

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> "ModelKnobs":
        """Some of the knobs as a dict (the rest keep their defaults), validated; ConfigError naming
        an unknown field."""
        known = [f.name for f in dataclasses.fields(ModelKnobs)]
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise ConfigError(f"unknown model fields {unknown}; valid fields: {', '.join(known)}")
        types = field_types(ModelKnobs)
        data = {name: check_value(name, value, types[name]) for name, value in fields.items()}
        return cls(**data).validate_model()

    @property
    def output_stride(self) -> int:
        return 32 // (2 ** sum(bool(f) for f in self.dilation))

    def validate_model(self) -> "ModelKnobs":
        """Raise :class:`ConfigError` (naming the flag) for a knob that cannot work; return self."""
        choices = {"model": MODEL_NAMES, "encoder": tuple(ENCODERS), "attention_init": ATTENTION_INITS,
                   "dilation_style": DILATION_STYLES}
        if is_timm_encoder(self.encoder) and len(self.encoder) > len(TIMM_PREFIX):
            del choices["encoder"]
            self._validate_timm_encoder()
        for name, valid in choices.items():
            value = getattr(self, name)
            if value not in valid:
                if name == "encoder":
                    valid = (*valid, TIMM_PREFIX + "<timm model name>")
                raise ConfigError(f"{_flag(name)}: unknown value {value!r}; valid choices: {', '.join(valid)}")
        if len(self.dilation) != 3:
            raise ConfigError(f"--dilation needs three flags (layer2,layer3,layer4), got {self.dilation!r}")
        if not 0.0 <= self.aspp_dropout < 1.0:
            raise ConfigError(f"--aspp-dropout must be in [0, 1), got {self.aspp_dropout}")
        if self.model == "distill_allconnect" and not self.skip:
            raise ConfigError("--model distill_allconnect is the all-scale skip decoder: it cannot be used with --no-skip")
        if self.model == "distill_allconnect" and self.output_stride < 8:
            raise ConfigError("--model distill_allconnect needs features at 8x: use a --dilation with output stride >= 8")
        return self

    def _validate_timm_encoder(self) -> None:
        """ConfigError naming the flag that cannot apply to a ``tu-`` (timm) encoder."""
        if self.model in ("mtan", "cross_stitch"):
            raise ConfigError(f"--model {self.model} is built on the ResNet stages: use --encoder "
                              f"{' | '.join(ENCODERS)}, not {self.encoder}")
        try:
            check_timm_options(self.se, self.dilation, self.dilation_style)
        except ValueError as e:
            raise ConfigError(str(e)) from None
