"""Learned task weighting and gradient balancing (UW, DWA, ..., Nash-MTL, Aligned-MTL).

``build(name, num_tasks, **options)`` makes a method; ``METHODS`` lists them by name. Every
method works without the trainer (see :mod:`fastmtl.weighting.base`); the trainer's glue
(DDP, AMP, compile, both gradient modes) is :mod:`fastmtl.weighting.engine`.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable

from .base import GradientWeighting, LossWeighting, Weighting, WeightingResult
from .methods import METHODS

GRAD_MODES = ("params", "rep")
NAMES = tuple(METHODS)


def build(name: str, num_tasks: int, **options: Any) -> Weighting:
    """The method ``name`` for ``num_tasks`` tasks with ``options`` over its paper defaults."""
    if name not in METHODS:
        raise ValueError(f"unknown weighting {name!r}; valid choices: {', '.join(NAMES)}")
    return METHODS[name](num_tasks, **options)


def _convert(name: str, key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
    elif isinstance(default, (int, float)):
        try:
            return type(default)(float(text)) if isinstance(default, int) and float(text).is_integer() else type(default)(text)
        except ValueError:
            pass
    else:
        return text
    raise ValueError(f"--weighting-opt {key}={text}: weighting {name} expects a {type(default).__name__} "
                     f"(default {default!r})")


def parse_options(name: str, items: Iterable[str]) -> Dict[str, Any]:
    """``["temperature=2", ...]`` -> ``{"temperature": 2.0}``, typed by the method's defaults.

    Raises ValueError naming the flag, the method's valid options and the expected type."""
    if name not in METHODS:
        raise ValueError(f"--weighting {name}: unknown method; valid choices: {', '.join(NAMES)}")
    defaults = METHODS[name].defaults
    options: Dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--weighting-opt {item!r}: expected key=value")
        if key not in defaults:
            valid = ", ".join(sorted(defaults)) or "none"
            raise ValueError(f"--weighting-opt {key}: weighting {name} has no such option; valid options: {valid}")
        options[key] = _convert(name, key, value.strip(), defaults[key])
    return options


__all__ = ["GRAD_MODES", "METHODS", "NAMES", "GradientWeighting", "LossWeighting", "Weighting", "WeightingResult",
           "build", "parse_options"]
