"""The unit every performance tool times: the trainer's own step (:func:`fastmtl.step.build_step`)
of a Config on a random batch, and the same model's inference forward."""
from __future__ import annotations

from typing import Tuple

import torch

from fastmtl.config import Config
from fastmtl.data.classes import NUM_CLASSES
from fastmtl.runtime import Runtime, amp_dtype_for
from fastmtl.step import build_step

from .inputs import random_batch, synthetic_info

TOTAL_STEPS = 1_000_000  # the poly schedule's length: the learning rate stays (almost) constant
STEPS_PER_EPOCH = 100  # what an epoch-based method (DWA's period) sees


class StepRunner:
    """``cfg``'s train step on ``device`` with a random batch of ``batch`` images of ``size``
    ``(H, W)`` for ``cfg.tasks`` (``num_classes`` semantic classes); autocast per ``cfg.amp``
    (``auto``: bf16 on CUDA, off on CPU). :meth:`train` runs one step (returns the loss, a
    python float), :meth:`infer` one eval-mode forward under ``no_grad``; ``parts`` is the
    :class:`~fastmtl.step.StepParts` (``parts.model``, ``parts.step``, ...)."""

    def __init__(self, cfg: Config, device, batch: int, size: Tuple[int, int], num_classes: int = NUM_CLASSES,
                 seed: int = 0):
        self.device = device = torch.device(device)
        self.rt = Runtime(device, amp_dtype=amp_dtype_for(cfg.amp, device))
        self.amp = self.rt.amp_dtype
        self.batch = batch
        info = synthetic_info(cfg.tasks, num_classes)
        torch.manual_seed(seed)
        self.parts = build_step(cfg, info, self.rt, TOTAL_STEPS, STEPS_PER_EPOCH)
        self.rgb, self.targets = random_batch(cfg.tasks, info, batch, size, device, seed)

    def train(self) -> float:
        self.parts.model.train()
        return self.parts.step(self.rgb, self.targets)[0]

    def infer(self):
        self.parts.model.eval()
        with torch.no_grad(), self.rt.autocast():
            return self.parts.forward(self.rgb)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
