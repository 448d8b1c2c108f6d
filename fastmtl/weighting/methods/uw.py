"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""
from __future__ import annotations

import torch
from torch import nn

from ..base import LossWeighting


class UW(LossWeighting):
    """``sum_t L_t / (2 exp(s_t)) + s_t / 2`` with learned log-variances ``s`` (LibMTL's form and
    its init ``s = -0.5``). ``s`` is trained by the run's optimizer (no weight decay)."""

    name = "uw"
    paper = "Kendall et al., CVPR 2018"
    defaults = {"init": -0.5}

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        self.log_var = nn.Parameter(torch.full((num_tasks,), float(self.options["init"])))

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        s = self.log_var.to(losses.dtype)
        return (losses / (2 * s.exp()) + s / 2).sum()
