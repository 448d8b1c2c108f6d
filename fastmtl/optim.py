"""The optimizers a run can use (``--optimizer``), their on-device skipped update, and the poly
learning-rate schedule."""
from __future__ import annotations

from typing import Callable

import torch

OPTIMIZERS = ("sgd", "adam", "adamw")


def make_optimizer(cfg, params) -> torch.optim.Optimizer:
    """``cfg.optimizer`` (one of :data:`OPTIMIZERS`) over ``params`` with the config's lr, momentum
    (SGD) and weight decay; ``cfg`` a :class:`~fastmtl.config.Config` or any object with those fields.

    Always torch's fused implementation (``fused=True``: one kernel per device and dtype; torch
    ships it for CUDA and, since 2.4, for the CPU): it takes a ``found_inf`` flag on the device
    (:func:`step_unless`), so a step with a non-finite loss or gradient is skipped without a host read."""
    params = list(params)
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                    fused=True)
        _zero_momentum(optimizer)
        return optimizer
    kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)


def _zero_momentum(optimizer: torch.optim.SGD) -> None:
    """Fused SGD allocates its momentum buffers uninitialised on the first step and leaves them so
    when that step is skipped; zero buffers from the start give the same first update (``buf = g``,
    dampening 0) and a skipped first step leaves them zero."""
    for group in optimizer.param_groups:
        if group["momentum"]:
            for p in group["params"]:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def step_unless(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> None:
    """``optimizer.step()`` that changes nothing (parameters, moments, step counts) where the 0-d
    bool ``found_inf`` (on the parameters' device) is set: the fused kernels' own check, no host read.
    ``optimizer`` must be fused (``fused=True``, as :func:`make_optimizer` makes it)."""
    if not all(group.get("fused") for group in optimizer.param_groups):
        raise TypeError(f"a skippable step needs a fused optimizer (fused=True), got {type(optimizer).__name__} unfused")
    optimizer.found_inf = found_inf.float()
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's ``optimizer.state_dict()`` (from any version: older ones were saved
    unfused, with CPU step counts) into a :func:`make_optimizer` optimizer, keeping it fused."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if step is not None:
                optimizer.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)


def poly_schedule(total_steps: int) -> Callable[[int], float]:
    """The LR factor of step ``step``: ``(1 - step / total_steps) ** 0.9``, floored at 1e-6."""
    return lambda step: max(1e-6, (1.0 - min(step, total_steps) / total_steps) ** 0.9)
