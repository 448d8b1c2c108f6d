"""Fixed task weights as a method (``--weighting fixed``, the default; the trainer applies that
default's ``--task-weight TASK=W`` itself, in :class:`fastmtl.losses.MultiTaskLoss`)."""
from __future__ import annotations

import torch

from ..base import LossWeighting


class Fixed(LossWeighting):
    """``sum_t w_t L_t`` with constant ``weights`` (default: 1 per task)."""

    name = "fixed"
    paper = "-"
    defaults = {"weights": None}

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        w = self.options["weights"]
        if isinstance(w, str):
            w = [float(x) for x in w.split(",")]
        w = torch.ones(num_tasks) if w is None else torch.as_tensor(w, dtype=torch.float32)
        if w.shape != (num_tasks,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"weighting fixed: weights must be {num_tasks} finite numbers >= 0, got {self.options['weights']!r}")
        self.register_buffer("weights", w)

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (self.weights.to(losses) * losses).sum()
