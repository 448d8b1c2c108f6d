"""Random loss weighting (Lin et al., TMLR 2022)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import LossWeighting


class RLW(LossWeighting):
    """Fresh weights ``softmax(z)``, ``z ~ N(0, I)``, every step, from the method's own generator
    (seeded by ``seed``, saved with the state), so all DDP ranks draw the same weights."""

    name = "rlw"
    paper = "Lin et al., TMLR 2022"
    defaults = {"seed": 0}

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        self.generator = torch.Generator().manual_seed(int(self.options["seed"]))
        self.current = torch.full((num_tasks,), 1.0 / num_tasks)

    def observe(self, losses: torch.Tensor) -> None:
        self.current = F.softmax(torch.randn(self.num_tasks, generator=self.generator), dim=0)

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (self.current.to(losses) * losses).sum()

    def _extra(self):
        return {"generator": self.generator.get_state(), "current": self.current.clone()}

    def _load_extra(self, state):
        self.generator.set_state(state["generator"])
        self.current = state["current"].clone()
