"""Geometric loss strategy (Chennupati et al., CVPR workshops 2019)."""
from __future__ import annotations

import torch

from ..base import LossWeighting


class GLS(LossWeighting):
    """``(prod_t L_t)^(1/T)``: its weights ``GLS / (T L_t)`` make it invariant to each loss's scale."""

    name = "gls"
    paper = "Chennupati et al., CVPRW 2019"
    defaults = {}

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return losses.clamp_min(1e-12).log().mean().exp()
