"""FAMO: fast adaptive multitask optimization (Liu et al., NeurIPS 2023)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import LossWeighting


class FAMO(LossWeighting):
    """Objective ``sum_t z_t log(L_t + eps) / c`` with ``z = softmax(xi)``, ``c = sum_t z_t / (L_t + eps)``
    (so the weights are ``z_t / (c (L_t + eps))``); the logits ``xi`` take one Adam step
    (``w_lr`` 0.025, L2 decay ``gamma`` 1e-3, the paper's defaults) on
    ``J_softmax^T (log L_prev - log L_now)``: tasks whose loss fell least gain weight.

    ``L_now`` is the next step's losses (LibMTL and the official code spend one extra no-grad
    forward pass on the same batch instead); standalone, call ``update(new_losses)`` yourself
    to use the official order. FAMO's own Adam state is plain buffers, not run parameters."""

    name = "famo"
    paper = "Liu et al., NeurIPS 2023"
    defaults = {"w_lr": 0.025, "gamma": 1e-3, "eps": 1e-8}
    betas = (0.9, 0.999)

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        for name in ("logits", "exp_avg", "exp_avg_sq"):
            self.register_buffer(name, torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("prev", torch.zeros(num_tasks, dtype=torch.float64))
        self.adam_steps, self.has_prev = 0, False

    def update(self, losses: torch.Tensor) -> None:
        """One Adam step of the logits from the previous losses to ``losses``."""
        eps = float(self.options["eps"])
        delta = (self.prev + eps).log() - (losses.detach().to(self.prev) + eps).log()
        z = F.softmax(self.logits, 0)
        grad = z * (delta - (z * delta).sum())  # J_softmax^T delta (J is symmetric)
        grad = grad + float(self.options["gamma"]) * self.logits
        b1, b2 = self.betas
        self.adam_steps += 1
        self.exp_avg.mul_(b1).add_(grad, alpha=1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (self.exp_avg_sq / (1 - b2 ** self.adam_steps)).sqrt() + 1e-8
        self.logits -= float(self.options["w_lr"]) / (1 - b1 ** self.adam_steps) * self.exp_avg / denom
        self.has_prev = False

    def observe(self, losses: torch.Tensor) -> None:
        if self.has_prev:
            self.update(losses)
        self.prev = losses.detach().to(self.logits).clone()
        self.has_prev = True

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        eps = float(self.options["eps"])
        z = F.softmax(self.logits, 0).to(losses)
        d = losses + eps
        c = (z / d).sum().detach()
        return (z * d.log() / c).sum()

    def _extra(self):
        return {"adam_steps": self.adam_steps, "has_prev": self.has_prev}

    def _load_extra(self, state):
        self.adam_steps, self.has_prev = int(state["adam_steps"]), bool(state["has_prev"])
