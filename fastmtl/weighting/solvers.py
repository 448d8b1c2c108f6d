"""Small ``T x T`` solvers in torch (T = number of tasks): no scipy / cvxpy.

All work in float64 on whatever device the Gram matrix is on; T is 2..10, so each costs
microseconds of arithmetic and (on GPU) one host sync per iteration at most.
"""
from __future__ import annotations

from typing import Callable

import torch


def project_to_simplex(y: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of ``y (T,)`` onto ``{x >= 0, sum x = 1}`` (sort-based, Held et al.)."""
    u, _ = torch.sort(y, descending=True)
    css = u.cumsum(0) - 1
    k = torch.arange(1, y.numel() + 1, device=y.device, dtype=y.dtype)
    positive = (u - css / k > 0).nonzero()
    rho = int(positive.max()) if positive.numel() else 0
    return (y - css[rho] / (rho + 1)).clamp_min(0)


def min_norm_two(g11: torch.Tensor, g12: torch.Tensor, g22: torch.Tensor) -> torch.Tensor:
    """``gamma`` in [0, 1] minimising ``|gamma g1 + (1 - gamma) g2|^2`` from the dot products."""
    denom = g11 + g22 - 2 * g12
    if float(denom) <= 1e-20:
        return torch.ones_like(g11) * 0.5
    return ((g22 - g12) / denom).clamp(0.0, 1.0)


def min_norm_point(gram: torch.Tensor, iters: int = 1000) -> torch.Tensor:
    """Weights ``a`` on the simplex minimising ``|a^T G|^2 = a^T gram a`` (MGDA's sub-problem).

    Two tasks: the closed form. More: projected gradient descent on the simplex
    (:func:`minimize_on_simplex`) on the Gram matrix scaled to unit diagonal maximum; Sener &
    Koltun (2018) use Frank-Wolfe, which converges to the same point, more slowly."""
    t = gram.shape[0]
    if t == 1:
        return torch.ones(1, dtype=gram.dtype, device=gram.device)
    if t == 2:
        g = min_norm_two(gram[0, 0], gram[0, 1], gram[1, 1])
        return torch.stack([g, 1 - g])
    m = gram / gram.diagonal().max().clamp_min(1e-30)
    return minimize_on_simplex(lambda a: a @ m @ a, lambda a: 2 * m @ a, t, gram, iters=iters, tol=1e-14)


def minimize_on_simplex(fun: Callable[[torch.Tensor], torch.Tensor], grad: Callable[[torch.Tensor], torch.Tensor],
                        t: int, like: torch.Tensor, iters: int = 300, tol: float = 1e-10) -> torch.Tensor:
    """Minimise a convex, differentiable ``fun`` (gradient ``grad``) over the simplex by projected
    gradient descent with backtracking (Armijo) line search, from the uniform point. For
    CAGrad's ``T``-variable sub-problem (LibMTL solves it with scipy's SLSQP) and MGDA's."""
    x = torch.full((t,), 1.0 / t, dtype=like.dtype, device=like.device)
    step = 1.0
    for _ in range(iters):
        f, g = fun(x), grad(x)
        if not bool(torch.isfinite(g).all()):
            break
        while True:
            cand = project_to_simplex(x - step * g)
            if fun(cand) <= f + g @ (cand - x) + (cand - x).pow(2).sum() / (2 * step) or step < 1e-12:
                break
            step *= 0.5
        moved = float((cand - x).abs().sum())
        x = cand
        step = min(step * 2.0, 1e12)
        if moved < tol:
            break
    return x


def nash_bargaining(gram: torch.Tensor, init: torch.Tensor, iters: int = 20, tol: float = 1e-10) -> torch.Tensor:
    """``alpha > 0`` with ``alpha_i (gram alpha)_i = 1`` for all i (Nash-MTL's bargaining solution).

    That condition is the stationarity of the strictly convex ``f(a) = a^T gram a / 2 - sum log a``
    (gradient ``gram a - 1/a``), so we run damped Newton on ``f`` (Hessian ``gram + diag(1/a^2)``),
    keeping ``a > 0`` by step halving, warm-started from ``init`` (the previous step's alpha).
    Navon et al. (2022) reach the same point with a sequence of convex programs (cvxpy/ECOS);
    ``iters`` plays the role of their ``optim_niter`` (Newton converges in a handful)."""
    a = init.to(gram).clamp_min(1e-8).clone()
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)

    def f(x):
        return 0.5 * x @ gram @ x - torch.log(x).sum()

    for _ in range(iters):
        grad = gram @ a - 1.0 / a
        if float(grad.abs().max()) < tol:
            break
        hess = gram + torch.diag(1.0 / a ** 2) + 1e-12 * eye
        delta = torch.linalg.solve(hess, grad)
        step, fa = 1.0, f(a)
        while True:
            cand = a - step * delta
            if bool((cand > 0).all()) and f(cand) <= fa - 1e-4 * step * (grad @ delta):
                break
            step *= 0.5
            if step < 1e-10:
                cand = a
                break
        a = cand
    return a
