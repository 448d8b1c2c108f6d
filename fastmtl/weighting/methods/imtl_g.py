"""IMTL-G, the gradient-balance half of Impartial Multi-Task Learning (Liu et al., ICLR 2021)."""
from __future__ import annotations

import torch

from ..base import GradientWeighting


class IMTLG(GradientWeighting):
    """Coefficients ``alpha`` (summing to 1) such that the update ``alpha @ G`` has the same
    projection on every task's unit gradient ``u_t``: ``alpha_{2:T} = g_1 U^T (D U^T)^-1`` with
    ``D_t = g_1 - g_t``, ``U_t = u_1 - u_t``, all read from the Gram matrix."""

    name = "imtl_g"
    paper = "Liu et al., ICLR 2021"
    defaults = {}

    def coefficients(self, gram, losses):
        t = self.num_tasks
        if t == 1:
            return torch.ones(1, dtype=gram.dtype, device=gram.device)
        norms = gram.diagonal().clamp_min(1e-30).sqrt()
        gu = gram / norms[None, :]  # gu[i, j] = g_i . u_j
        g1u = gu[0, 0] - gu[0, 1:]  # g_1 . U_j
        du = gu[0, 0] - gu[0, 1:][None, :] - gu[1:, 0][:, None] + gu[1:, 1:]  # D_i . U_j
        rest = torch.linalg.solve(du.T, g1u)  # the row vector g1u @ inv(du)
        return torch.cat([(1 - rest.sum()).reshape(1), rest])
