"""The optimizers a run can use (``--optimizer``) and the poly learning-rate schedule."""
from __future__ import annotations

from typing import Callable

import torch

OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (one of :data:`OPTIMIZERS`) over ``params`` with the config's lr, momentum
    (SGD) and weight decay; ``cfg`` a :class:`~fastmtl.config.Config` or any object with those fields."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def poly_schedule(total_steps: int) -> Callable[[int], float]:
    """The LR factor of step ``step``: ``(1 - step / total_steps) ** 0.9``, floored at 1e-6."""
    return lambda step: max(1e-6, (1.0 - min(step, total_steps) / total_steps) ** 0.9)
