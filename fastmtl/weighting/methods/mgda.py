"""MGDA-UB: multi-objective gradient descent (Sener & Koltun, NeurIPS 2018)."""
from __future__ import annotations

import torch

from ..base import GradientWeighting
from ..solvers import min_norm_point

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


class MGDA(GradientWeighting):
    """The min-norm point of the convex hull of the (normalised) task gradients: a direction
    that decreases every task (or zero at a Pareto-stationary point). With
    ``--weighting-grads rep`` (gradients w.r.t. the shared representation) this is the paper's
    MGDA-UB; with ``params`` plain MGDA. ``normalization``: none | l2 | loss | loss+ (LibMTL's
    ``mgda_gn``, default none); the coefficients apply to the unnormalised gradients as
    ``a_t / n_t``."""

    name = "mgda_ub"
    paper = "Sener & Koltun, NeurIPS 2018"
    defaults = {"normalization": "none"}

    def __init__(self, num_tasks: int, **options):
        super().__init__(num_tasks, **options)
        if self.options["normalization"] not in NORMALIZATIONS:
            raise ValueError(f"weighting mgda_ub: normalization must be one of {', '.join(NORMALIZATIONS)}, "
                             f"got {self.options['normalization']!r}")

    def coefficients(self, gram, losses):
        kind = self.options["normalization"]
        norms = gram.diagonal().clamp_min(0).sqrt()
        if kind == "none":
            n = torch.ones_like(norms)
        elif kind == "l2":
            n = norms
        else:
            if losses is None:
                raise ValueError(f"weighting mgda_ub: normalization {kind} needs the losses")
            n = losses.to(gram) if kind == "loss" else losses.to(gram) * norms
        n = n.clamp_min(1e-12)
        a = min_norm_point(gram / (n[:, None] * n[None, :]))
        return a / n
