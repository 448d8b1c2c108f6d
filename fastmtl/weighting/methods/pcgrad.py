"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""
from __future__ import annotations

import torch

from ..base import GradientWeighting


class PCGrad(GradientWeighting):
    """For each task i, in a random order over the tasks j: if ``g_i^PC . g_j < 0`` project
    ``g_i^PC`` onto the normal plane of ``g_j``; the update is ``sum_i g_i^PC``. Every
    ``g_i^PC`` is a combination of the original gradients, so it is tracked as coefficients
    from the Gram matrix alone. The order comes from the method's own generator (``seed``).

    The projection divides by ``|g_j|^2`` itself, with no epsilon (LibMTL adds 1e-8, which at
    ``rep`` gradient scales, squared norms ~1e-6, leaves the projection 1 % short); a zero
    ``g_j`` conflicts with nothing, so the division is never by zero."""

    name = "pcgrad"
    paper = "Yu et al., NeurIPS 2020"
    defaults = {"seed": 0}

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        self.generator = torch.Generator().manual_seed(int(self.options["seed"]))

    def coefficients(self, gram, losses):
        t = self.num_tasks
        a = torch.eye(t, dtype=gram.dtype, device=gram.device)  # g_i^PC = a[i] @ G
        for i in range(t):
            for j in torch.randperm(t, generator=self.generator).tolist():
                dot = a[i] @ gram[:, j]
                if dot < 0 and gram[j, j] > 0:
                    a[i, j] -= dot / gram[j, j]
        return a.sum(0)

    def _extra(self):
        return {"generator": self.generator.get_state()}

    def _load_extra(self, state):
        self.generator.set_state(state["generator"])
