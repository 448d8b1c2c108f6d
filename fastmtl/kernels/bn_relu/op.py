"""The ``torch.library`` ops ``fastmtl::bn_relu`` and ``fastmtl::bn_relu_backward`` (input
checks, dispatch to the Triton launchers or the references, fake kernels) and their autograd:
the ``autograd.Function`` behind :func:`batch_norm_relu`.

The launchers are looked up on :mod:`.launch` at every call, as the self-check probe does, so
that replacing one there (tests) reaches every caller.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._utils import check_floating, check_same_device, compute_dtype, empty_out
from ..dispatch import use_triton
from ..selfcheck import passes
from . import launch
from .reference import bn_relu_backward_reference, bn_relu_reference


def _check_inputs(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                  running_var: Optional[Tensor]) -> None:
    op = "fastmtl.bn_relu"
    check_floating(op, x=x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    check_same_device(op, x=x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"{op}: {name} must be (C={c},), got {tuple(t.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must both be given or both be None")
    if x.numel() // max(c, 1) <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {torch.Size(x.shape)}")


@torch.library.custom_op("fastmtl::bn_relu", mutates_args=("running_mean", "running_var"))
def bn_relu(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
            running_var: Optional[Tensor], momentum: float = 0.1, eps: float = 1e-5) -> Tuple[Tensor, Tensor, Tensor]:
    """Training-mode ``relu(batch_norm(x))`` with batch statistics: ``(out, mean, invstd)``.

    ``x`` ``(N, C, H, W)``; ``weight``/``bias`` ``(C,)`` or None; ``running_mean``/``running_var``
    ``(C,)`` (updated in place with ``momentum``, the unbiased variance) or both None. ``out``
    in x's dtype and layout rule; ``mean``/``invstd`` ``(C,)`` in the compute dtype.
    """
    _check_inputs(x, weight, bias, running_mean, running_var)
    if use_triton(x) and passes("bn_relu", x):
        return launch.bn_relu_forward_triton(x, weight, bias, running_mean, running_var, momentum, eps)
    return bn_relu_reference(x, weight, bias, running_mean, running_var, momentum, eps)


@bn_relu.register_fake
def _bn_relu_fake(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    _check_inputs(x, weight, bias, running_mean, running_var)
    dt = compute_dtype(x, weight)
    return empty_out(x), x.new_empty((x.shape[1],), dtype=dt), x.new_empty((x.shape[1],), dtype=dt)


@torch.library.custom_op("fastmtl::bn_relu_backward", mutates_args=())
def bn_relu_backward(grad: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
                     invstd: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`bn_relu`: ``(dx, dweight, dbias)`` from its output gradient ``grad``
    and its ``mean``/``invstd``. ``dx`` in x's dtype and layout rule; ``dweight``/``dbias`` in
    the parameters' dtypes, empty tensors for missing parameters."""
    if use_triton(grad) and passes("bn_relu", x):
        return launch.bn_relu_backward_triton(grad, x, weight, bias, mean, invstd)
    return bn_relu_backward_reference(grad, x, weight, bias, mean, invstd)


@bn_relu_backward.register_fake
def _bn_relu_backward_fake(grad, x, weight, bias, mean, invstd):
    param_grad = lambda p: torch.empty_like(p, memory_format=torch.contiguous_format) if p is not None else x.new_empty(0)  # noqa: E731
    return empty_out(x), param_grad(weight), param_grad(bias)


class _BatchNormReLU(torch.autograd.Function):
    """Autograd of :func:`bn_relu` (torch.library refuses an autograd formula on an op that
    mutates its inputs, so the formula lives here): ``bn_relu`` forward, ``bn_relu_backward``
    backward; no double backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        out, mean, invstd = bn_relu(x, weight, bias, running_mean, running_var, momentum, eps)
        ctx.has_params = (weight is not None, bias is not None)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return out

    @staticmethod
    def backward(ctx, grad):
        dx, dweight, dbias = bn_relu_backward(grad, *ctx.saved_tensors)
        return dx, dweight if ctx.has_params[0] else None, dbias if ctx.has_params[1] else None, None, None, None, None


def batch_norm_relu(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                    running_var: Optional[Tensor], momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """``relu(F.batch_norm(x, running_mean, running_var, weight, bias, training=True, momentum,
    eps))`` through :func:`bn_relu` (the running statistics updated in place), differentiable
    wrt ``x``, ``weight`` and ``bias``; see :func:`bn_relu` for shapes and dtypes."""
    return _BatchNormReLU.apply(x, weight, bias, running_mean, running_var, momentum, eps)
