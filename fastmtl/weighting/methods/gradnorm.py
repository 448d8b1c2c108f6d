"""GradNorm: gradient normalisation for adaptive loss balancing (Chen et al., ICML 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import GradientWeighting


class GradNorm(GradientWeighting):
    """Weights ``w = T softmax(s)`` (so they sum to T), learned by the run's optimizer on
    ``sum_t | |w_t g_t| - mean_k |w_k g_k| * r_t^alpha |`` with ``r_t`` the inverse training rate
    ``(L_t / L_t(0)) / mean(...)`` and the target held constant (``alpha`` 1.5); ``L(0)`` is the
    first step's losses. The norms are over the whole shared part (LibMTL), read from the Gram
    diagonal. ``w`` weights the whole loss (heads too, as in the paper)."""

    name = "gradnorm"
    paper = "Chen et al., ICML 2018"
    defaults = {"alpha": 1.5}
    head_weights_mode = "coefficients"

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        self.logits = nn.Parameter(torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.zeros(num_tasks, dtype=torch.float64))
        self.has_initial = False

    def task_weights(self) -> torch.Tensor:
        return self.num_tasks * F.softmax(self.logits, 0)

    def coefficients(self, gram, losses):
        if losses is None:
            raise ValueError("weighting gradnorm needs the task losses")
        if not self.has_initial:
            self.initial_losses = losses.detach().to(self.initial_losses).clone()
            self.has_initial = True
        return self.task_weights().detach().to(gram)

    def own_loss(self, gram, losses):
        if losses is None:
            raise ValueError("weighting gradnorm needs the task losses")
        w = self.task_weights()
        initial = (self.initial_losses if self.has_initial else losses).detach().to(w)
        norms = w * gram.diagonal().clamp_min(0).sqrt().to(w)
        ratio = losses.detach().to(w) / initial.clamp_min(1e-12)
        target = (norms.mean() * (ratio / ratio.mean()) ** float(self.options["alpha"])).detach()
        return (norms - target).abs().sum()

    def _extra(self):
        return {"has_initial": self.has_initial}

    def _load_extra(self, state):
        self.has_initial = bool(state["has_initial"])
