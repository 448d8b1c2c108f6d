"""Dynamic weight average (Liu, Johns & Davison, CVPR 2019 (MTAN))."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import LossWeighting


class DWA(LossWeighting):
    """``w = T softmax(r / temperature)``, ``r_t = Lbar_t(k-1) / Lbar_t(k-2)``, where ``Lbar(k)`` is
    task t's mean loss over period k (an epoch in the paper: ``period`` steps; the trainer sets it
    to its steps per epoch when 0). Weights are 1 for the first two periods."""

    name = "dwa"
    paper = "Liu et al., CVPR 2019"
    defaults = {"temperature": 2.0, "period": 0}

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        if float(self.options["temperature"]) <= 0:
            raise ValueError(f"weighting dwa: temperature must be > 0, got {self.options['temperature']}")
        self.register_buffer("period_sum", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("history", torch.zeros(2, num_tasks, dtype=torch.float64))  # [k-2, k-1]
        self.count, self.periods_done = 0, 0
        self.current = torch.ones(num_tasks)

    @property
    def period(self) -> int:
        p = int(self.options["period"])
        if p <= 0:
            raise ValueError("weighting dwa: set period (steps per epoch) > 0 for standalone use")
        return p

    def observe(self, losses: torch.Tensor) -> None:
        # the weights of this step come from the periods completed before it
        if self.periods_done >= 2:
            r = (self.history[1] / self.history[0].clamp_min(1e-12)).float()
            self.current = self.num_tasks * F.softmax(r / float(self.options["temperature"]), dim=0).cpu()
        else:
            self.current = torch.ones(self.num_tasks)
        self.period_sum += losses.detach().to(self.period_sum)
        self.count += 1
        if self.count == self.period:
            self.history = torch.stack([self.history[1], self.period_sum / self.count])
            self.period_sum.zero_()
            self.count, self.periods_done = 0, self.periods_done + 1

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (self.current.to(losses) * losses).sum()

    def _extra(self):
        return {"count": self.count, "periods_done": self.periods_done, "current": self.current.clone()}

    def _load_extra(self, state):
        self.count, self.periods_done = int(state["count"]), int(state["periods_done"])
        self.current = state["current"].clone()
