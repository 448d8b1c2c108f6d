"""Aligned-MTL: independent component alignment (Senushkin et al., CVPR 2023)."""
from __future__ import annotations

import torch

from ..base import GradientWeighting


class AlignedMTL(GradientWeighting):
    """Replace the task gradients ``G = U S V^T`` by ``sigma_min U V^T`` (orthogonal, equal norms:
    a condition number of 1) and sum them: ``alpha = 1^T sigma_min V L^-1/2 V^T`` from the
    eigen-decomposition ``G G^T = V L V^T``, dropping eigenvalues below the rank tolerance."""

    name = "aligned_mtl"
    paper = "Senushkin et al., CVPR 2023"
    defaults = {}

    def coefficients(self, gram, losses):
        lam, v = torch.linalg.eigh(gram)
        tol = lam.max() * max(gram.shape) * torch.finfo(torch.float32).eps
        keep = lam > tol
        if not bool(keep.any()):
            return torch.zeros(self.num_tasks, dtype=gram.dtype, device=gram.device)
        lam, v = lam[keep], v[:, keep]
        b = lam.min().sqrt() * (v / lam.sqrt()) @ v.T
        return b.sum(0)
