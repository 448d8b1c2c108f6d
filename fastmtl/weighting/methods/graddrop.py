"""GradDrop: gradient sign dropout (Chen et al., NeurIPS 2020)."""
from __future__ import annotations

import torch

from ..base import GradientWeighting


class GradDrop(GradientWeighting):
    """Per element: ``P = (1 + sum_t s_t / sum_t |s_t|) / 2`` (positive-sign purity); with
    ``U ~ Uniform(0, 1)`` keep the positive task gradients where ``P > U``, the negative ones
    where ``P < U``; a dropped gradient is multiplied by ``leak`` (default 0).

    Parameter gradients: ``s = g`` per element. Representation gradients (the paper's and
    LibMTL's setting): ``s = sum over the batch of g * sign(input)``, one mask per feature
    element shared by the batch (:meth:`multipliers` takes ``s``). ``U`` comes from the method's
    own generator (``seed``; on the gradients' device), identical on every DDP rank.

    ``P`` is computed without an epsilon (the official code adds 1e-7 to the denominator, which at
    ``rep`` gradient scales drops ~4 % of the elements whose tasks all agree): where every task
    agrees in sign ``P`` is exactly 1 or 0, and such elements are always kept; where every ``s_t``
    is 0, ``P = 0.5`` (nothing to keep)."""

    name = "graddrop"
    paper = "Chen et al., NeurIPS 2020"
    defaults = {"leak": 0.0, "seed": 0}
    gram_only = False

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        if not 0.0 <= float(self.options["leak"]) <= 1.0:
            raise ValueError(f"weighting graddrop: leak must be in [0, 1], got {self.options['leak']}")
        self.generator = None
        self._pending_state = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device).manual_seed(int(self.options["seed"]))
            if self._pending_state is not None and self._pending_state[0] == device.type:
                self.generator.set_state(self._pending_state[1])
            self._pending_state = None
        return self.generator

    def multipliers(self, signed: torch.Tensor) -> torch.Tensor:
        """``signed (T, E)`` -> ``(T, E)`` multipliers in ``{leak, 1}`` of the task gradients."""
        total = signed.abs().sum(0)
        p = 0.5 * (1 + signed.sum(0) / torch.where(total > 0, total, 1.0))
        u = torch.rand(p.shape, generator=self._generator(signed.device), device=signed.device, dtype=p.dtype)
        keep = (p > u)[None] & (signed > 0) | ((p < u) | (p == 0))[None] & (signed < 0)
        leak = float(self.options["leak"])
        mult = leak + (1 - leak) * keep.to(signed.dtype)
        self.last_weights = mult.float().mean(1).cpu()
        return mult

    def combine(self, grads, losses=None):
        mult = self.multipliers(grads)
        return (mult * grads).sum(0), self.last_weights.clone()

    def _extra(self):
        if self.generator is not None:
            return {"generator_device": self.generator.device.type, "generator": self.generator.get_state()}
        if self._pending_state is not None:
            return {"generator_device": self._pending_state[0], "generator": self._pending_state[1]}
        return {}

    def _load_extra(self, state):
        self.generator = None
        self._pending_state = (state["generator_device"], state["generator"]) if "generator" in state else None
