"""Nash-MTL: multi-task learning as a bargaining game (Navon et al., ICML 2022)."""
from __future__ import annotations

import torch

from ..base import GradientWeighting
from ..solvers import nash_bargaining


class NashMTL(GradientWeighting):
    """``alpha > 0`` with ``alpha_i (G G^T alpha)_i = 1`` (the Nash bargaining solution), solved
    on the Frobenius-normalised Gram matrix by damped Newton (``optim_niter`` iterations,
    warm-started from the previous solution, see :func:`~fastmtl.weighting.solvers.nash_bargaining`)
    every ``update_weights_every`` steps. ``alpha`` weights the whole loss (heads too, as in the
    paper); the shared gradient is clipped to norm ``max_norm`` (0: off). Defaults 1, 20, 1.0.

    A task whose gradient is exactly zero has no bargaining solution (``alpha_i -> inf``: the
    official code's solver fails and it keeps the previous alpha of every task). Here the game is
    solved among the other tasks, and that task keeps its previous normalised alpha (1 at the
    start), so its alpha, which is also its head weight, stays of the others' size instead of
    growing without bound; it adds nothing to the shared gradient. When every gradient is zero,
    alpha is not updated."""

    name = "nash_mtl"
    paper = "Navon et al., ICML 2022"
    defaults = {"update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0}
    head_weights_mode = "coefficients"

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        if int(self.options["update_weights_every"]) < 1:
            raise ValueError("weighting nash_mtl: update_weights_every must be >= 1")
        self.register_buffer("alpha_normalized", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("alpha", torch.ones(num_tasks, dtype=torch.float64))
        self.steps = 0

    def coefficients(self, gram, losses):
        active = gram.diagonal() > 0  # tasks with a non-zero gradient
        if self.steps % int(self.options["update_weights_every"]) == 0 and bool(active.any()):
            sub = gram[active][:, active]
            scale = torch.linalg.matrix_norm(sub)  # that of the whole Gram matrix: the rest is 0
            a = self.alpha_normalized.to(gram).clone()
            a[active] = nash_bargaining(sub / scale, a[active], int(self.options["optim_niter"]))
            self.alpha_normalized = a.detach().to(self.alpha_normalized)
            self.alpha = (a / scale.sqrt()).detach().to(self.alpha)
        self.steps += 1
        c = self.alpha.to(gram)
        max_norm = float(self.options["max_norm"])
        if max_norm > 0:
            norm = (c @ gram @ c).clamp_min(0).sqrt()
            c = c * (max_norm / (norm + 1e-6)).clamp(max=1.0)  # torch.nn.utils.clip_grad_norm_
        return c

    def head_weights(self, coefficients):
        return self.alpha.to(coefficients)

    def _extra(self):
        return {"steps": self.steps}

    def _load_extra(self, state):
        self.steps = int(state["steps"])
