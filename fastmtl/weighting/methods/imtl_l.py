"""IMTL-L, the loss-balance half of Impartial Multi-Task Learning (Liu et al., ICLR 2021)."""
from __future__ import annotations

import torch
from torch import nn

from ..base import LossWeighting


class IMTLL(LossWeighting):
    """``sum_t exp(s_t) L_t - s_t`` with learned scales ``s`` (init 0), trained by the run's
    optimizer: at the optimum every scaled loss ``exp(s_t) L_t`` equals 1."""

    name = "imtl_l"
    paper = "Liu et al., ICLR 2021"
    defaults = {"init": 0.0}

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        self.log_scale = nn.Parameter(torch.full((num_tasks,), float(self.options["init"])))

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        s = self.log_scale.to(losses.dtype)
        return (s.exp() * losses - s).sum()
