"""GradVac: gradient vaccine (Wang et al., ICLR 2021)."""
from __future__ import annotations

import torch

from ..base import GradientWeighting


class GradVac(GradientWeighting):
    """For each pair (i, j), in random order: if ``cos(g_i^PC, g_j)`` is below the EMA target
    ``phi_ij``, add the multiple of ``g_j`` that lifts it to exactly ``phi_ij``; the target tracks
    the observed cosine with decay ``beta`` (default 0.5). Over the whole shared part (LibMTL's
    group type 0), tracked as coefficients from the Gram matrix. The Gram matrix is divided by
    its largest diagonal entry first, so the official 1e-8 epsilons are relative to the gradients'
    scale (absolute, they bias the cosines by percents at ``rep`` gradient scales)."""

    name = "gradvac"
    paper = "Wang et al., ICLR 2021"
    defaults = {"beta": 0.5, "seed": 0}

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        self.register_buffer("target", torch.zeros(num_tasks, num_tasks, dtype=torch.float64))
        self.generator = torch.Generator().manual_seed(int(self.options["seed"]))

    def coefficients(self, gram, losses):
        t, beta = self.num_tasks, float(self.options["beta"])
        target = self.target.to(gram)
        scale = gram.diagonal().max()
        if scale > 0:  # cosines and coefficients are scale-free; the epsilons are relative to |g|^2
            gram = gram / scale
        a = torch.eye(t, dtype=gram.dtype, device=gram.device)
        for i in range(t):
            others = [j for j in range(t) if j != i]
            for k in torch.randperm(t - 1, generator=self.generator).tolist():
                j = others[k]
                norm_i = (a[i] @ gram @ a[i]).clamp_min(0).sqrt()
                norm_j = gram[j, j].clamp_min(0).sqrt()
                rho = ((a[i] @ gram[:, j]) / (norm_i * norm_j + 1e-8)).clamp(-1.0, 1.0)
                phi = target[i, j]
                if rho < phi:
                    w = norm_i * (phi * (1 - rho ** 2).clamp_min(0).sqrt() - rho * (1 - phi ** 2).sqrt()) / (
                        norm_j * (1 - phi ** 2).sqrt() + 1e-8)
                    a[i, j] += w
                target[i, j] = (1 - beta) * phi + beta * rho
        self.target = target.detach().to(self.target)
        return a.sum(0)

    def _extra(self):
        return {"generator": self.generator.get_state()}

    def _load_extra(self, state):
        self.generator.set_state(state["generator"])
