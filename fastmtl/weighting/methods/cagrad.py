"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""
from __future__ import annotations

import torch

from ..base import GradientWeighting
from ..solvers import minimize_on_simplex

RESCALES = (0, 1, 2)


class CAGrad(GradientWeighting):
    """``d = g0 + (c / |g_w|) g_w`` with ``g0`` the mean gradient, ``c = calpha |g0|`` and ``w`` on the
    simplex minimising ``g_w . g0 + c |g_w|`` (a T-variable convex problem, solved by projected
    gradient descent); rescale 1 divides by ``1 + calpha^2`` (defaults calpha 0.5, rescale 1).

    The coefficients do not change when every gradient is scaled by the same factor, so the
    problem is solved on the Gram matrix divided by its largest diagonal entry: the official
    code's 1e-8 epsilons (kept for the square roots' gradients at 0) are then relative to the
    largest squared gradient norm instead of absolute, which at ``rep`` gradient scales (squared
    norms 1e-6..1e-5, or less) changed ``c`` and the result by percents."""

    name = "cagrad"
    paper = "Liu et al., NeurIPS 2021"
    defaults = {"calpha": 0.5, "rescale": 1}

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        if int(self.options["rescale"]) not in RESCALES:
            raise ValueError(f"weighting cagrad: rescale must be 0, 1 or 2, got {self.options['rescale']}")

    def coefficients(self, gram, losses):
        t, calpha = self.num_tasks, float(self.options["calpha"])
        b = torch.full((t,), 1.0 / t, dtype=gram.dtype, device=gram.device)
        rescale = {0: 1.0, 1: 1 + calpha ** 2, 2: 1 + calpha}[int(self.options["rescale"])]
        scale = gram.diagonal().max()
        if not scale > 0:  # every gradient is zero: so is any combination
            return b / rescale
        gram = gram / scale  # the coefficients are scale-free; the epsilons are relative to |g|^2
        c = calpha * (gram.mean().clamp_min(0) + 1e-8).sqrt() + 1e-8

        gb = gram @ b

        def objective(x):
            return x @ gb + c * ((x @ gram @ x).clamp_min(0) + 1e-8).sqrt()

        def gradient(x):
            gx = gram @ x
            return gb + c * gx / ((x @ gx).clamp_min(0) + 1e-8).sqrt()

        w = minimize_on_simplex(objective, gradient, t, gram)
        gw_norm = (w @ gram @ w).clamp_min(0).sqrt()
        coef = b + c / (gw_norm + 1e-8) * w
        return coef / rescale
